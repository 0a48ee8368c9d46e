"""Text sampled from a language model: token- vs sentence-block EP rates, and the fluctuation check (EP paper §5).

:func:`sampled_text_ep` draws sequences of ``T`` tokens from BOS at a temperature and measures

    token level            sigma / T     (token reversal of the whole sequence; exact fluctuation theorem)
    sentence-block level   sigma' / T'   (each sample truncated after its last sentence end, sentences reversed)

(:func:`epjax.text.sample_entropy_production`, docs/mathematics.md §3, §7). :func:`fluctuation_test` checks the
integral fluctuation theorem ``<exp(-sigma)> = 1`` (eq. 20) with a bootstrap interval, at short ``T`` and high
temperature where the average converges (:func:`epjax.text.fluctuation_check`).

>>> from epjax.experiments.texts import load_language_model                     # doctest: +SKIP
>>> result = sampled_text_ep(load_language_model(context_length=40), num_samples=16, num_steps=40)  # doctest: +SKIP
>>> result.plot("sample.png")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from epjax import text as text_lib
from epjax.experiments.report import Result, json_header, json_number
from epjax.experiments.texts import LanguageModel


def _estimate_json(est: Any) -> dict[str, Any] | None:
    if est is None:
        return None
    return {
        "mean": json_number(est.mean),
        "stderr": json_number(est.stderr),
        "num_samples": est.num_samples,
        "ci95_low": json_number(est.ci_low),
        "ci95_high": json_number(est.ci_high),
        "fraction_negative": json_number(est.fraction_negative),
    }


@dataclass(kw_only=True)
class SampledRun(Result):
    """What both experiments of this module record: the model, the seed, ``N``, the time taken and the files read.

    Attributes:
        model: the model's name.
        seed: the random seed.
        num_samples: ``N``, the sequences asked for.
        elapsed: seconds taken.
        inputs: the model's files (hashed into the provenance).
    """

    model: str
    seed: int
    num_samples: int
    elapsed: float
    inputs: Sequence[Any] = ()

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)

    def settings(self, num_steps: int, temperature: float) -> dict[str, Any]:
        """The first keys of the JSON report: the command, the versions, the model and the sampling settings."""
        return json_header(
            "sample-lm",
            model=self.model,
            num_samples=self.num_samples,
            num_steps=num_steps,
            temperature=temperature,
            seed=self.seed,
        )


def _measured(measure: Callable[..., Any], lm: LanguageModel, seed: int, **options: Any) -> tuple[Any, float]:
    """``measure(jax.random.key(seed), lm.model, lm.params, **options)`` and the seconds it took."""
    import jax

    start = time.perf_counter()
    value = measure(jax.random.key(seed), lm.model, lm.params, **options)
    return value, time.perf_counter() - start


@dataclass(kw_only=True)
class SampledTextEP(SampledRun):
    """Token- and sentence-block EP rates of sampled text (what ``epjax sample-lm`` reports).

    Attributes:
        sample: the :class:`epjax.text.SampleResult` (rates, sigmas, lengths, samples).
        sentence_rule: which tokens end a sentence.
        (and the fields of :class:`SampledRun`)
    """

    sample: Any
    sentence_rule: str
    title = "sample-lm"

    @property
    def num_single_sentence(self) -> int:
        """Samples kept at block level with one sentence (``sigma' = 0``)."""
        return int(np.sum(self.sample.num_blocks == 1))

    @property
    def mean_block_length(self) -> float | None:
        """Mean ``T'`` of the samples kept at block level (``None`` without a block estimate)."""
        if self.sample.block is None:
            return None
        return float(np.mean(self.sample.block_lengths[self.sample.block_lengths > 0]))

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Per level: mean ± SE, samples, mean length, fraction of negative sigma."""
        res = self.sample
        rows = [
            [
                "token  sigma/T",
                f"{res.token.mean:.4f} ± {res.token.stderr:.4f}",
                str(res.token.num_samples),
                f"{res.num_steps}",
                f"{res.token.fraction_negative:.3f}",
            ]
        ]
        if res.block is not None:
            rows.append(
                [
                    "sentence blocks  sigma'/T'",
                    f"{res.block.mean:.4f} ± {res.block.stderr:.4f}",
                    str(res.block.num_samples),
                    f"{self.mean_block_length:.1f}",
                    f"{res.block.fraction_negative:.3f}",
                ]
            )
        else:
            rows.append(["sentence blocks  sigma'/T'", "n/a (fewer than 2 samples with a sentence end)", "0", "-", "-"])
        return ["level", "mean ± SE", "samples", "mean length", "P(sigma < 0)"], rows

    def table(self) -> str:
        """The settings, the table, how many samples the block level dropped, and the time taken."""
        res, n = self.sample, self.num_samples
        involution = (
            " (and under the reader rule an end can depend on the next sentence, so block reversal is not an "
            "involution)"
            if self.sentence_rule == "reader"
            else ""
        )
        return "\n".join(
            [
                f"Entropy production of {n} sequences of T = {res.num_steps} tokens sampled from BOS under "
                f"{self.model} at temperature {res.temperature:g} (sampling and scoring), seed {self.seed}; "
                f"sentence blocks by the {self.sentence_rule!r} rule; nats per token.",
                "",
                super().table(),
                "",
                f"  {res.num_dropped} of {n} samples dropped at block level (no sentence end); "
                f"{self.num_single_sentence} kept with a single sentence (sigma' = 0).",
                "  Block level truncates each sample after its own last sentence end"
                + involution
                + ": its fluctuation theorem is only approximate.",
                f"  {self.elapsed:.1f} s",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The settings, both estimates and every rate (the keys of ``epjax sample-lm --json``)."""
        res = self.sample
        return {
            **self.settings(res.num_steps, res.temperature),
            "mode": "sample",
            "sentence_rule": self.sentence_rule,
            "token": _estimate_json(res.token),
            "block": _estimate_json(res.block),
            "num_dropped": res.num_dropped,
            "num_single_sentence": self.num_single_sentence,
            "mean_block_length": json_number(self.mean_block_length),
            "rate_token": [json_number(v) for v in res.token.sigmas],
            "rate_block": [json_number(v) for v in (res.block.sigmas if res.block is not None else [])],
        }

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """Histograms of both rates (top) and their running means with 95 % bands (bottom), one column per level.

        Given ``axes``, draws the histograms of both levels into ``axes[0]`` and, with a second axes, the
        running means into ``axes[1]``.
        """
        from matplotlib.ticker import MaxNLocator

        res = self.sample
        levels = [("token reversal: sigma / T", res.token)]
        if res.block is not None:
            levels.append((f"sentence-block reversal ({self.sentence_rule} rule): sigma' / T'", res.block))
        if axes is None:
            fig.set_size_inches(8.5, 6.8)
            grid = fig.subplots(2, len(levels), squeeze=False)
            panels = [(grid[0, k], grid[1, k]) for k in range(len(levels))]
        else:
            panels = [(axes[0], axes[1] if len(axes) > 1 else None)] * len(levels)
        for k, ((label, est), (hist, run)) in enumerate(zip(levels, panels, strict=True)):
            color = f"C{k}"
            counts, _, _ = hist.hist(
                est.sigmas, bins=30, color=color, alpha=0.7, label=f"{label}, N = {est.num_samples} samples"
            )
            hist.axvline(est.mean, color=color, lw=1.5, ls="--", label=f"mean {est.mean:.4f} ± {est.stderr:.4f}")
            hist.set_xlabel("EP rate (nats per token)")
            hist.set_ylabel("number of samples")
            hist.yaxis.set_major_locator(MaxNLocator(integer=True))
            hist.set_ylim(0, 1.5 * max(counts.max(), 1))  # headroom: the legend sits above the bars
            hist.legend(fontsize=7, loc="upper center")
            hist.grid(alpha=0.3)
            if run is None:
                continue
            n = np.arange(1, est.num_samples + 1)
            half = 1.96 * np.std(est.sigmas, ddof=1) / np.sqrt(n)
            run.plot(n, est.running_mean, color=color, label="running mean")
            run.fill_between(
                n, est.running_mean - half, est.running_mean + half, color=color, alpha=0.2,
                label="95 % band (±1.96 sd / √n)",
            )  # fmt: skip
            run.set_xlabel("number of samples n")
            run.xaxis.set_major_locator(MaxNLocator(integer=True))
            run.set_ylabel("mean EP rate of the first n (nats per token)")
            run.legend(fontsize=7, loc="best")
            run.grid(alpha=0.3)
        dropped = f"; block level: {res.num_dropped} samples without a sentence end dropped" if res.block else ""
        fig.suptitle(
            f"Token vs sentence-block reversal of text sampled from {self.model}\n"
            f"T = {res.num_steps} tokens, temperature {res.temperature:g}, seed {self.seed}{dropped}",
            fontsize=9,
        )


@dataclass(kw_only=True)
class FluctuationTest(SampledRun):
    """The integral fluctuation theorem ``<exp(-sigma)> = 1`` on sampled text (``epjax sample-lm --ft``).

    Attributes:
        check: the :class:`epjax.text.FluctuationCheck`.
        (and the fields of :class:`SampledRun`)
    """

    check: Any
    title = "sample-lm --ft"

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """``<exp(-sigma)>``, its bootstrap interval, whether it covers 1, mean sigma and P(sigma < 0)."""
        c, iv = self.check, self.check.interval
        return ["<exp(-sigma)>", "bootstrap 95% CI", "covers 1", "mean sigma ± SE", "P(sigma < 0)"], [
            [
                f"{c.mean_exp_neg_sigma:.4f}",
                f"[{iv.low:.4f}, {iv.high:.4f}]",
                "yes" if c.covers_one else "NO",
                f"{c.estimate.mean:.4f} ± {c.estimate.stderr:.4f}",
                f"{c.estimate.fraction_negative:.3f}",
            ]
        ]

    def table(self) -> str:
        """The settings, the table and the time taken."""
        c = self.check
        return "\n".join(
            [
                f"Integral fluctuation theorem <exp(-sigma)> = 1 (eq. 20) under {self.model}: N = {self.num_samples} "
                f"sequences of T = {c.num_steps} tokens at temperature {c.temperature:g} (sampling and scoring), "
                f"seed {self.seed}.",
                "",
                super().table(),
                "",
                f"  {self.elapsed:.1f} s",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The settings, ``<exp(-sigma)>`` with its interval and the estimate of sigma."""
        c = self.check
        return {
            **self.settings(c.num_steps, c.temperature),
            "mode": "ft",
            "mean_exp_neg_sigma": json_number(c.mean_exp_neg_sigma),
            "ci95_low": json_number(c.interval.low),
            "ci95_high": json_number(c.interval.high),
            "covers_one": c.covers_one,
            "sigma": _estimate_json(c.estimate),
        }


def sampled_text_ep(
    lm: LanguageModel,
    *,
    num_samples: int = 200,
    num_steps: int = 120,
    seed: int = 0,
    sentence_rule: str = "reader",
    **options: Any,
) -> SampledTextEP:
    """Token- and sentence-block EP rates of ``num_samples`` sequences sampled from BOS (EP paper §5).

    Args:
        lm: the language model (:func:`epjax.experiments.texts.load_language_model`; a GGUF model loaded with
            ``context_length = num_steps``).
        num_samples: ``N >= 2``.
        num_steps: ``T``, tokens per sequence.
        seed: sample ``i`` uses ``fold_in(key(seed), i)``.
        sentence_rule: ``"reader"`` (default) or ``"paper"``.
        **options: passed to :func:`epjax.text.sample_entropy_production`, with its defaults: ``temperature``
            (``tau``, sampling and scoring; 1), ``batch_size`` (sequences per compiled batch; 16) and ``progress``
            (a progress bar on stderr, counting the sequences asked for; off).

    Returns:
        :class:`SampledTextEP`.
    """
    sample, elapsed = _measured(
        text_lib.sample_entropy_production,
        lm,
        seed,
        tokenizer=lm.tokenizer,
        num_samples=num_samples,
        num_steps=num_steps,
        sentence_rule=sentence_rule,
        **options,
    )
    return SampledTextEP(
        model=lm.name,
        seed=seed,
        num_samples=num_samples,
        elapsed=elapsed,
        inputs=lm.files,
        sample=sample,
        sentence_rule=sentence_rule,
    )


def fluctuation_test(
    lm: LanguageModel, *, seed: int = 0, batch_size: int = 16, progress: bool = False, **options: Any
) -> FluctuationTest:
    """``<exp(-sigma)> = 1`` (eq. 20) on sampled sequences, with a bootstrap interval (EP paper §5).

    Args:
        lm: the language model.
        seed: the random seed.
        batch_size: sequences per compiled batch.
        progress: a progress bar on stderr.
        **options: passed to :func:`epjax.text.fluctuation_check`, with its defaults: ``num_samples``
            (``N >= 2``, 2000), ``num_steps`` (``T``, 5: short, as ``exp(-sigma)`` is heavy-tailed),
            ``temperature`` (``tau``, 3.5: high, for the same reason) and ``confidence`` (0.95).

    Returns:
        :class:`FluctuationTest` (its ``passed`` is left ``None``: the interval is reported, not enforced).
    """
    check, elapsed = _measured(
        text_lib.fluctuation_check, lm, seed, batch_size=batch_size, progress=progress, **options
    )
    return FluctuationTest(
        model=lm.name, seed=seed, num_samples=check.estimate.num_samples, elapsed=elapsed, inputs=lm.files, check=check
    )


__all__ = ["FluctuationTest", "SampledRun", "SampledTextEP", "fluctuation_test", "sampled_text_ep"]
