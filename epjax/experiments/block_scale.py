"""How EP falls as the reversal coarsens: the block-scale analysis of sampled or fixed text (docs/mathematics.md §9).

Two families of reorderings act on each sequence's prefix up to its last sentence end (``T'`` tokens):
groups of ``k`` consecutive sentences, and fixed blocks of ``l`` tokens with a shorter tail block; ``k = 1`` is
sentence reversal and ``l = 1`` token reversal. Per reordering the table gives the effective block length,
the mean of ``sigma / T'`` with its standard error, median and bootstrap interval, and the *identity
fraction*: the share of sequences the reordering leaves unchanged (compared on the ids; their ``sigma`` is 0
exactly). The figure draws ``sigma / T'`` against the effective block length, one curve per family, with the
EP paper authors' GPT-2 figures (:data:`REFERENCE_GPT2`) for comparison.

Effective block length: ``l`` for fixed blocks (the nominal length, as in the reference table) and ``k`` times
the mean sentence length ``sum T' / sum (sentences)`` for sentence groups; the mean number of tokens per
reversed block actually moved (``sum T' / sum (blocks)``, shorter where tails and last groups are short) is a
column of its own.

>>> from epjax.experiments.texts import load_language_model                       # doctest: +SKIP
>>> result = block_scale(load_language_model(context_length=120), num_samples=500)  # doctest: +SKIP
>>> print(result.table())                                                         # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from epjax import stats
from epjax import text as text_lib
from epjax.experiments.report import Result, format_table, json_header, json_number


class ReferenceRow(NamedTuple):
    """One row of the EP paper authors' block-scale table (GPT-2, 500 samples of 120 tokens at temperature 1)."""

    scheme: str
    scale: int
    block_length: float
    rate: float
    identity_fraction: float


#: The EP paper authors' re-scored GPT-2 figures (docs/mathematics.md §9).
REFERENCE_GPT2 = (
    ReferenceRow("sentences", 1, 22.5, 0.469, 0.064),
    ReferenceRow("sentences", 2, 45.1, 0.322, 0.20),
    ReferenceRow("sentences", 3, 67.6, 0.215, 0.398),
    ReferenceRow("tokens", 1, 1.0, 4.055, 0.0),
    ReferenceRow("tokens", 10, 10.0, 1.621, 0.004),
    ReferenceRow("tokens", 20, 20.0, 1.022, 0.006),
    ReferenceRow("tokens", 40, 40.0, 0.600, 0.014),
    ReferenceRow("tokens", 60, 60.0, 0.350, 0.05),
)

CSV_COLUMNS = (
    "scheme",
    "scale",
    "n",
    "block_length",
    "tokens_per_block",
    "mean",
    "stderr",
    "median",
    "ci_low",
    "ci_high",
    "identity_fraction",
)


def summarize_reorderings(
    scores: text_lib.ReorderingScores, *, confidence: float = 0.95, num_bootstrap: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """One summary row per reordering (keys :data:`CSV_COLUMNS`) of :class:`epjax.text.ReorderingScores`.

    Raises:
        ValueError: fewer than 2 sequences with a sentence end (no mean and interval to report).
    """
    kept = scores.kept
    n = int(kept.sum())
    if n < 2:
        raise ValueError(
            f"the block-scale analysis needs at least 2 sequences with a sentence end, got {n} of "
            f"{kept.size}; sample longer sequences or more of them."
        )
    lengths = scores.lengths[kept].astype(np.float64)
    sentence_length = lengths.sum() / scores.num_sentences[kept].sum()
    out = []
    for i, r in enumerate(scores.reorderings):
        rates = scores.rates(i)
        interval = stats.bootstrap_ci(rates, confidence=confidence, num_resamples=num_bootstrap, seed=seed)
        out.append(
            {
                "scheme": r.scheme,
                "scale": r.scale,
                "n": n,
                "block_length": float(r.scale * sentence_length if r.scheme == "sentences" else r.scale),
                "tokens_per_block": float(lengths.sum() / scores.num_blocks[i, kept].sum()),
                "mean": float(rates.mean()),
                "stderr": float(rates.std(ddof=1) / np.sqrt(n)),
                "median": float(np.median(rates)),
                "ci_low": interval.low,
                "ci_high": interval.high,
                "identity_fraction": float(scores.identity[i, kept].mean()),
            }
        )
    return out


@dataclass(kw_only=True)
class BlockScale(Result):
    """The block-scale table of one model on sampled or fixed text (what ``epjax block-scale`` reports).

    Attributes:
        model: the model's name.
        source: ``"sampled"`` or where the fixed texts came from.
        scores: the per-sequence :class:`epjax.text.ReorderingScores`.
        summary: one row per reordering (keys :data:`CSV_COLUMNS`).
        settings: the run's settings (sampling or texts, sentence rule, bootstrap).
        elapsed: seconds taken.
        inputs: the files read (model, texts), hashed into the provenance.
        seed: the sampling seed (``None`` for fixed texts).
    """

    model: str
    source: str
    scores: Any
    summary: list[dict[str, Any]]
    settings: dict[str, Any]
    elapsed: float
    inputs: Sequence[Any] = ()
    seed: int | None = None
    title = "block-scale"

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)

    @property
    def num_dropped(self) -> int:
        """Sequences with no sentence end (left out of every row)."""
        return int(np.sum(~self.scores.kept))

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Per reordering: block length, tokens per block, mean ± SE, median, interval, identity fraction."""
        level = int(round(100 * self.settings.get("confidence", 0.95)))
        headers = [
            "reordering",
            "block length",
            "tokens/block",
            "sigma/T' mean ± SE",
            "median",
            f"{level}% CI",
            "identity",
        ]
        cells = [
            [
                text_lib.Reordering(r["scheme"], r["scale"]).label,
                f"{r['block_length']:.1f}",
                f"{r['tokens_per_block']:.1f}",
                f"{r['mean']:.4f} ± {r['stderr']:.4f}",
                f"{r['median']:.4f}",
                f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
                f"{r['identity_fraction']:.3f}",
            ]
            for r in self.summary
        ]
        return headers, cells

    def table(self) -> str:
        """The settings, the table, the GPT-2 reference figures and the time taken."""
        s = self.settings
        what = (
            f"{s['num_samples']} sequences of T = {s['num_steps']} tokens sampled from BOS at temperature "
            f"{s['temperature']:g} (seed {self.seed})"
            if self.source == "sampled"
            else f"{len(self.scores.lengths)} texts ({self.source})"
        )
        ref = format_table(
            ["reordering", "block length", "sigma/T'", "identity"],
            [
                [
                    text_lib.Reordering(r.scheme, r.scale).label,
                    f"{r.block_length:g}",
                    f"{r.rate:.3f}",
                    f"{r.identity_fraction:g}",
                ]
                for r in REFERENCE_GPT2
            ],
        )
        return "\n".join(
            [
                f"Block-scale analysis under {self.model}: {what}; each truncated after its last sentence end "
                f"({self.settings['sentence_rule']!r} rule), sigma/T' in nats per token.",
                "",
                super().table(),
                "",
                f"  {self.num_dropped} sequences without a sentence end left out; identity: share of sequences the "
                "reordering leaves unchanged (sigma = 0).",
                "  reference, EP paper authors (GPT-2, 500 samples of 120 tokens, temperature 1):",
                ref,
                "",
                f"  {self.elapsed:.1f} s",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The settings, the summary rows and every sequence's sigma per reordering."""
        sc = self.scores
        return {
            **json_header("block-scale", "nats per token"),
            "model": self.model,
            "source": self.source,
            **self.settings,
            "seed": self.seed,
            "num_dropped": self.num_dropped,
            "rows": [{k: (json_number(v) if isinstance(v, float) else v) for k, v in r.items()} for r in self.summary],
            "lengths": sc.lengths.tolist(),
            "num_sentences": sc.num_sentences.tolist(),
            "sigma": {r.label: [json_number(v) for v in sc.sigma[i]] for i, r in enumerate(sc.reorderings)},
            "reference_gpt2": [r._asdict() for r in REFERENCE_GPT2],
        }

    def csv_header(self) -> Sequence[str]:
        """:data:`CSV_COLUMNS`."""
        return CSV_COLUMNS

    def csv_rows(self):
        """One row per reordering."""
        return ([r[c] for c in CSV_COLUMNS] for r in self.summary)

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """``sigma / T'`` against the effective block length: one curve per family, and the GPT-2 reference."""
        if axes is None:
            fig.set_size_inches(7.5, 4.8)
            axes = [fig.subplots()]
        ax = axes[0]
        names = {"sentences": "groups of k sentences", "tokens": "fixed blocks of l tokens"}
        for k, scheme in enumerate(text_lib.SCHEMES):
            rows = [r for r in self.summary if r["scheme"] == scheme]
            ref = [r for r in REFERENCE_GPT2 if r.scheme == scheme]
            marker = "o" if scheme == "sentences" else "s"
            if rows:
                x = [r["block_length"] for r in rows]
                y = np.array([r["mean"] for r in rows])
                err = np.array([[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]])
                ax.errorbar(
                    x, y, yerr=err, color=f"C{k}", marker=marker, capsize=3, label=f"{names[scheme]} ({self.model})"
                )
                for r, xi, yi in zip(rows, x, y, strict=True):
                    ax.annotate(
                        f"{r['scale']}\nid {r['identity_fraction']:.2f}", (xi, yi), textcoords="offset points",
                        xytext=(5, 4), fontsize=7, color=f"C{k}",
                    )  # fmt: skip
            ax.plot(
                [r.block_length for r in ref], [r.rate for r in ref], color=f"C{k}", ls=":", marker=marker,
                mfc="none", alpha=0.6, label=f"{names[scheme]} (GPT-2, EP paper authors)",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low / 1.2, high * 1.6)  # room for the labels above the points
        left, right = ax.get_xlim()
        ax.set_xlim(left, right * 1.6)
        ax.set_xlabel("effective block length (tokens)")
        ax.set_ylabel("sigma / T' (nats per token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        level = int(round(100 * self.settings.get("confidence", 0.95)))
        ax.set_title(
            f"EP per token against the scale of the reversal ({self.source}, {self.model})\n"
            f"bars: {level} % bootstrap interval; labels: scale and identity fraction",
            fontsize=8,
        )


def _settings(sentence_rule: str, confidence: float, num_bootstrap: int, **more: Any) -> dict[str, Any]:
    return {"sentence_rule": sentence_rule, "confidence": confidence, "num_bootstrap": num_bootstrap, **more}


def block_scale(
    lm: Any,
    *,
    texts: Sequence[str] | None = None,
    source: str | None = None,
    text_files: Sequence[Any] = (),
    num_samples: int = 500,
    num_steps: int = 120,
    temperature: float = 1.0,
    seed: int = 0,
    sentence_groups: Sequence[int] = (1, 2, 3),
    block_sizes: Sequence[int] = (1, 10, 20, 40, 60),
    sentence_rule: str = "paper",
    truncate: bool = False,
    confidence: float = 0.95,
    num_bootstrap: int = 2000,
    batch_size: int = 16,
    progress: bool = False,
) -> BlockScale:
    """The block-scale analysis of a language model: sampled text (default) or fixed ``texts``.

    Args:
        lm: a :class:`epjax.experiments.texts.LanguageModel` (for sampling, loaded with a context of at least
            ``num_steps``).
        texts: fixed texts to analyse instead of sampling.
        source: how reports name the texts (default ``"given texts"``).
        text_files: the files the texts came from (hashed into the provenance).
        num_samples: sampled sequences ``N``.
        num_steps: tokens per sampled sequence ``T``.
        temperature: sampling and scoring temperature.
        seed: sample ``i`` uses ``fold_in(key(seed), i)``.
        sentence_groups: the ``k`` of the sentence groups.
        block_sizes: the ``l`` of the fixed blocks.
        sentence_rule: ``"paper"`` (default) or ``"reader"``.
        truncate: fixed texts: drop a tail after the last sentence end instead of refusing the text.
        confidence: coverage of the bootstrap interval of the mean.
        num_bootstrap: bootstrap resamples.
        batch_size: sequences per compiled call.
        progress: a progress bar on stderr.

    Returns:
        :class:`BlockScale`.
    """
    import jax

    chosen = text_lib.reorderings(sentence_groups, block_sizes)
    start = time.perf_counter()
    if texts is None:
        scores = text_lib.sample_reorderings(
            jax.random.key(seed),
            lm.model,
            lm.params,
            lm.tokenizer,
            num_samples=num_samples,
            num_steps=num_steps,
            temperature=temperature,
            reorderings=chosen,
            sentence_rule=sentence_rule,
            batch_size=batch_size,
            progress=progress,
        )
        settings = _settings(
            sentence_rule, confidence, num_bootstrap, num_samples=num_samples, num_steps=num_steps,
            temperature=temperature,
        )  # fmt: skip
        source, used_seed = "sampled", seed
    else:
        scores = text_lib.text_reorderings(
            lm.model,
            lm.params,
            lm.tokenizer,
            texts,
            reorderings=chosen,
            truncate=truncate,
            sentence_rule=sentence_rule,
            batch_size=batch_size,
            progress=progress,
        )
        settings = _settings(sentence_rule, confidence, num_bootstrap, truncate=truncate)
        source, used_seed = source or "given texts", None
    elapsed = time.perf_counter() - start
    summary = summarize_reorderings(scores, confidence=confidence, num_bootstrap=num_bootstrap, seed=seed)
    return BlockScale(
        model=lm.name,
        source=source,
        scores=scores,
        summary=summary,
        settings=settings,
        elapsed=elapsed,
        inputs=(*lm.files, *text_files),
        seed=used_seed,
    )


__all__ = ["CSV_COLUMNS", "REFERENCE_GPT2", "BlockScale", "ReferenceRow", "block_scale", "summarize_reorderings"]
