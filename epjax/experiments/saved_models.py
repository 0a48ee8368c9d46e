"""The entropy production of a saved model, beside the exact EP of the chain it was trained on (``epjax ep``).

:func:`saved_model_ep` reads a model saved by :func:`epjax.train.save` (by ``epjax train`` or
:meth:`epjax.experiments.training.TrainingResult.save`) and estimates its EP by Monte Carlo
(:func:`epjax.entropy_production`, docs/mathematics.md §2–3): ``S(T) = E[sigma]`` with
``sigma(x) = ln P(x) - ln P(reverse(x))``, the reversal being of single tokens or of blocks of ``L`` tokens
(:func:`epjax.reverse_blocks`). When the model was trained on the built-in Markov chain (the file records it) and
is sampled at temperature 1, the chain's exact EP at the same ``T`` and reversal is the reference
(:func:`chain_reference`): from its marginals for token reversal (:func:`epjax.markov.entropy_production`), by
enumerating all ``V**T`` sequences for blocks. The result gives a verdict on the comparison: consistent when
``|z| = |S_hat - S_chain| / SE < 4``.

>>> reversal_label(None), reversal_label(4)
('token level', 'blocks of 4 tokens')
>>> import math
>>> cycle = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]  # mostly 0 -> 1 -> 2 -> 0: r = 0.7 ln 8
>>> ref = chain_reference({"process": {"type": "markov", "initial": [1 / 3] * 3, "transition": cycle}}, 5)
>>> round(ref.value, 6), round(4 * 0.7 * math.log(8), 6), ref.note
(5.822436, 5.822436, "exact, from the chain's marginals")
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import epjax
from epjax import train
from epjax._checks import check_positive_int
from epjax.experiments.report import ExperimentError, Result, json_header, json_number
from epjax.text import ContextLengthError

NUM_STDERR = 4.0
"""The comparison with the reference passes when ``|z| < NUM_STDERR`` (Monte Carlo within k standard errors)."""

MAX_ENUMERATION = 2**20
"""The largest ``V**T`` enumerated for the exact block-reversal reference."""


class MissingLengthError(ExperimentError):
    """The saved model does not record its training length and no ``num_steps`` was given.

    Attributes:
        path: the model file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        super().__init__(f"{self.path} does not record its training length; give `num_steps`.")


class BlockSizeError(ExperimentError):
    """``block_size`` does not divide ``num_steps`` (a block reversal needs whole blocks).

    Attributes:
        block_size: the block length asked for.
        num_steps: the trajectory length.
    """

    def __init__(self, block_size: int, num_steps: int):
        self.block_size, self.num_steps = block_size, num_steps
        super().__init__(
            f"`block_size` {block_size} must divide `num_steps` {num_steps} (block reversal needs whole blocks)."
        )


class Reference(NamedTuple):
    """An exact EP to compare a Monte Carlo estimate with.

    Attributes:
        value: the exact EP (nats).
        note: how it was computed.
    """

    value: float
    note: str


def block_reversal(block_size: int | None) -> Callable:
    """:func:`epjax.reverse_tokens` for ``None``, else :func:`epjax.reverse_blocks` with ``block_size``."""
    if block_size is None:
        return epjax.reverse_tokens
    return functools.partial(epjax.reverse_blocks, block_size=block_size)


def chain_reference(extra: Any, num_steps: int, block_size: int | None = None) -> Reference | None:
    """The exact EP of the Markov chain a model was trained on, as saved by ``epjax train --process markov``.

    Args:
        extra: the metadata saved with the model (its ``"process"`` entry holds the chain's ``"initial"`` law and
            ``"transition"`` matrix).
        num_steps: ``T``.
        block_size: ``None`` for token reversal, else the block length ``L``.

    Returns:
        The :class:`Reference` in float64: from the chain's marginals for token reversal; by enumerating all
        ``V**T`` sequences for blocks (``None`` beyond :data:`MAX_ENUMERATION` sequences). ``None`` when the
        metadata hold no usable chain.
    """
    process = extra.get("process") if isinstance(extra, dict) else None
    if not isinstance(process, dict) or process.get("type") != "markov":
        return None
    with jax.enable_x64(True):
        try:
            params = epjax.markov.from_probabilities(process["initial"], process["transition"])
        except (KeyError, TypeError, ValueError):
            return None
        if block_size is None:
            value = float(epjax.markov.entropy_production(params, num_steps))
            return Reference(value, "exact, from the chain's marginals")
        vocab = int(np.shape(process["initial"])[0])
        if vocab**num_steps > MAX_ENUMERATION:
            return None
        chain = epjax.markov.MarkovChain(vocab)
        value = epjax.exact_entropy_production(chain, params, num_steps=num_steps, reversal=block_reversal(block_size))
        return Reference(float(value), f"exact, by enumerating all {vocab}^{num_steps} sequences")


def reversal_label(block_size: int | None) -> str:
    """What was reversed, in words: ``"token level"`` or ``"blocks of L tokens"``."""
    return "token level" if block_size is None else f"blocks of {block_size} tokens"


@dataclass
class SavedModelEP(Result):
    """The Monte Carlo EP of a saved model (``epjax ep``), with the exact EP of its training chain when known.

    Attributes:
        path: the model file.
        model: the model as sampled (at :attr:`temperature`).
        estimate: the :class:`epjax.Estimate` (nats), with every ``sigma``.
        num_steps: ``T``.
        block_size: ``None`` for token reversal, else the block length ``L``.
        temperature: the sampling temperature.
        seed: the seed of the Monte Carlo key.
        reference: the exact EP of the training chain (:func:`chain_reference`), or ``None``.
    """

    path: Path
    model: Any
    estimate: Any
    num_steps: int
    block_size: int | None
    temperature: float
    seed: int | None = None
    reference: Reference | None = None

    title = "entropy production of a saved model"

    @property
    def inputs(self) -> tuple[Path, ...]:  # type: ignore[override]
        """The model file read (hashed into the provenance)."""
        return (self.path,)

    @property
    def z(self) -> float | None:
        """``(S_hat - S_ref) / SE``, ``None`` without a reference (NaN when SE = 0)."""
        if self.reference is None:
            return None
        est = self.estimate
        return (est.mean - self.reference.value) / est.stderr if est.stderr > 0 else float("nan")

    @property
    def consistent(self) -> bool | None:
        """Whether the estimate is within :data:`NUM_STDERR` standard errors of the reference (``None``: none)."""
        z = self.z
        return None if z is None else bool(abs(z) < NUM_STDERR)

    @property
    def verdict(self) -> str | None:
        """The comparison with the reference in words (``None`` without a reference)."""
        z = self.z
        if z is None:
            return None
        k = f"{NUM_STDERR:g}"
        if self.consistent:
            return f"consistent with the chain's exact EP (|z| = {abs(z):.2f} < {k})"
        return f"differs from the chain's exact EP (|z| = {abs(z):.2f} >= {k})"

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """The estimate, its interval and diagnostics, and the reference with its z (nats)."""
        est, T = self.estimate, self.num_steps
        rows = [
            ["S = E[σ]", f"{est.mean:.6f} ± {est.stderr:.6f}"],
            ["95% interval", f"[{est.ci_low:.6f}, {est.ci_high:.6f}]"],
            ["S / T (per token)", f"{est.mean / T:.6f}"],
            ["⟨exp(−σ)⟩ (1 in expectation)", f"{est.mean_exp_neg_sigma:.6f} ± {est.exp_neg_sigma_stderr:.6f}"],
            ["fraction σ < 0", f"{est.fraction_negative:.6f}"],
        ]
        if self.reference is not None:
            ref = self.reference
            rows.append([f"training process ({ref.note})", f"{ref.value:.6f}  (z = {self.z:+.2f})"])
        return ["quantity", "value (nats)"], rows

    def table(self) -> str:
        """The model, what was reversed and at what T, the :meth:`rows` and the verdict."""
        est = self.estimate
        _, rows = self.rows()
        width = max(len(r[0]) for r in rows)
        lines = [
            f"model: {self.path}: {self.model!r}",
            f"entropy production, {reversal_label(self.block_size)}, T = {self.num_steps}, "
            f"N = {est.num_samples} trajectories, seed {self.seed} (nats):",
            *(f"  {name.ljust(width)}  {value}" for name, value in rows),
        ]
        if self.verdict is not None:
            lines.append(f"  verdict: {self.verdict}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The estimate, every σ, the reference, its z and the verdict (the keys of ``epjax ep --json``)."""
        est, ref = self.estimate, self.reference
        return {
            **json_header("ep", "nats"),
            "model_file": str(self.path),
            "model": train.model_spec(self.model),
            "num_steps": self.num_steps,
            "block_size": self.block_size,
            "temperature": self.temperature,
            "num_samples": est.num_samples,
            "seed": self.seed,
            "mean": json_number(est.mean),
            "stderr": json_number(est.stderr),
            "ci95_low": json_number(est.ci_low),
            "ci95_high": json_number(est.ci_high),
            "per_token": json_number(est.mean / self.num_steps),
            "mean_exp_neg_sigma": json_number(est.mean_exp_neg_sigma),
            "exp_neg_sigma_stderr": json_number(est.exp_neg_sigma_stderr),
            "fraction_negative": json_number(est.fraction_negative),
            "reference": None if ref is None else json_number(ref.value),
            "reference_note": None if ref is None else ref.note,
            "reference_z": json_number(self.z),
            "verdict": self.verdict,
            "sigmas": [json_number(v) for v in est.sigmas],
        }

    def draw(self, fig: Any, axes: Any) -> None:
        """Left: the running mean of σ with a ± SE band (convergence). Right: the histogram of σ.

        Each panel's legend sits below it, outside the data. Given one axes, only the left panel is drawn.
        """
        est = self.estimate
        s = np.asarray(est.sigmas, dtype=np.float64)
        n = np.arange(1, s.size + 1)
        mean = np.cumsum(s) / n
        # Running standard error sd_n / sqrt(n) from the running second moment (ddof = 1).
        var = np.maximum(np.cumsum(s**2) / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
        se = np.sqrt(var / n)
        se[0] = np.nan  # one trajectory has no spread
        if axes is None:
            fig.set_size_inches(10, 4.8)
            axes = fig.subplots(1, 2)
            what = (
                "token reversal x_T … x_1"
                if self.block_size is None
                else f"reversal of the order of blocks of {self.block_size} tokens"
            )
            family = getattr(self.model, "family", type(self.model).__name__)
            fig.suptitle(
                f"{self.path.name} ({family} model, temperature {self.temperature:g}): EP at T = {self.num_steps} "
                f"tokens\n{what}, N = {est.num_samples} trajectories",
                fontsize=9,
            )
        ref = self.reference
        ax1 = axes[0]
        ax1.fill_between(n, mean - se, mean + se, color="C0", alpha=0.25, lw=0, label="± 1 standard error")
        ax1.plot(n, mean, color="C0", lw=1.2, label=f"running mean of σ (final {est.mean:.4g} ± {est.stderr:.2g})")
        if ref is not None:
            ax1.axhline(ref.value, color="k", lw=1.2, ls="--", label=f"training chain, exact = {ref.value:.4g}")
        ax1.set(xscale="log", xlabel="number of trajectories n", ylabel=f"EP estimate S({self.num_steps}) (nats)")
        if self.verdict is not None:
            ax1.set_title(self.verdict, fontsize=8)
        ax1.grid(alpha=0.3)
        ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=1, frameon=False)
        if len(axes) < 2:
            return
        ax2 = axes[1]
        ax2.hist(s, bins=min(80, max(10, s.size // 25)), color="C1", alpha=0.8, label="σ of each trajectory")
        ax2.axvline(est.mean, color="C0", lw=1.5, label=f"mean = {est.mean:.4g}")
        ax2.axvline(0, color="0.3", lw=0.8, ls=":", label="σ = 0")
        if ref is not None:
            ax2.axvline(ref.value, color="k", lw=1.2, ls="--", label="training chain, exact EP")
        reversed_x = (
            "reverse(x)"
            if self.block_size is None
            else f"x with the\norder of its {self.block_size}-token blocks reversed"
        )
        ax2.set(
            xlabel=f"σ = ln P(x) − ln P({reversed_x}) (nats)",
            ylabel="number of trajectories",
            title=f"fraction σ < 0: {est.fraction_negative:.3f}, ⟨e^(−σ)⟩ = {est.mean_exp_neg_sigma:.3g}",
        )
        ax2.title.set_fontsize(8)
        ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=2, frameon=False)


def saved_model_ep(
    path: str | os.PathLike,
    *,
    num_steps: int | None = None,
    block_size: int | None = None,
    num_samples: int = 2000,
    batch_size: int | None = None,
    temperature: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SavedModelEP:
    """Monte Carlo EP of a model saved by :func:`epjax.train.save`, with its training chain's exact EP if known.

    Args:
        path: the model file.
        num_steps: trajectory length ``T`` (default: the length of the sequences it was trained on).
        block_size: reverse the order of blocks of this many tokens (must divide ``T``); ``None``: token reversal.
        num_samples: Monte Carlo trajectories (>= 2).
        batch_size: trajectories per compiled batch (default: the library's).
        temperature: sample and score with ``logits / temperature`` (default: the saved model's).
        seed: the Monte Carlo key is ``jax.random.key(seed)``.
        progress: show a progress bar over the trajectories.

    Returns:
        The :class:`SavedModelEP`; its reference is the training chain's exact EP at temperature 1.

    Raises:
        MissingLengthError: no ``num_steps`` and the file does not record the training length.
        ContextLengthError: ``num_steps`` exceeds the model's context (:class:`epjax.text.ContextLengthError`,
            fields ``num_steps`` and ``max_length``).
        BlockSizeError: ``block_size`` does not divide ``num_steps``.
        ValueError: the file is missing or not an epjax model file, or an argument is out of range.
    """
    path = Path(path)
    num_samples = check_positive_int("num_samples", num_samples, minimum=2)
    seed = check_positive_int("seed", seed, minimum=0)
    if block_size is not None:
        block_size = check_positive_int("block_size", block_size)
    model, params, extra = train.load(path)
    if temperature is not None:
        model = model.with_temperature(temperature)
    if num_steps is None:
        length = extra.get("data", {}).get("length") if isinstance(extra, dict) else None
        if not isinstance(length, int) or length < 1:
            raise MissingLengthError(path)
        num_steps = length
    num_steps = check_positive_int("num_steps", num_steps)
    if model.max_length is not None and num_steps > model.max_length:
        raise ContextLengthError("num_steps", num_steps, model.max_length)
    if block_size is not None and num_steps % block_size:
        raise BlockSizeError(block_size, num_steps)
    options = {} if batch_size is None else {"batch_size": check_positive_int("batch_size", batch_size)}
    est = epjax.entropy_production(
        jax.random.key(seed),
        model,
        params,
        num_steps=num_steps,
        num_samples=num_samples,
        reversal=block_reversal(block_size),
        progress=progress,
        **options,
    )
    reference = chain_reference(extra, num_steps, block_size) if model.temperature == 1.0 else None
    return SavedModelEP(path, model, est, num_steps, block_size, float(model.temperature), seed, reference)


__all__ = [
    "BlockSizeError",
    "ContextLengthError",
    "MAX_ENUMERATION",
    "MissingLengthError",
    "NUM_STDERR",
    "Reference",
    "SavedModelEP",
    "block_reversal",
    "chain_reference",
    "reversal_label",
    "saved_model_ep",
]
