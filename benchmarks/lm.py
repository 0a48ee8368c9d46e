"""Benchmarks of the pretrained language model (SmolLM2-135M GGUF), float32, with transformers + PyTorch as the peer.

Four parts, in one run on one machine (``--parts`` picks some; the models are always loaded):

(a) GGUF load time: ``epjax.pretrained.load_gguf`` (read + dequantise the Q4_1 file to float32 jnp arrays,
    rebuild the tokenizer) against ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` (float32);
(b) scoring throughput (tokens/s) of the shipped texts, forward and token-reversed (what ``epjax texts``
    does, at its batch size 16): ``epjax.text.log_prob_sums`` (rows grouped by padded length, batches of 16,
    one compilation per length) against the PyTorch model on the same batches under ``torch.no_grad``
    (log-softmax, gather, masked sum; its last batch of a length is not padded to 16 rows, epjax's is);
(c) KV-cache sampling throughput (tokens/s) from BOS at temperature 1: ``model.sample_with_log_probs``
    vmapped over a batch (jitted) against ``generate(do_sample=True, use_cache=True, top_k=0)`` with the
    same batch size and length;
(d) many-sets scoring: both shipped text sets ("ep-paper" 30 + 30 and "strict" 100 + 100, 260 distinct texts of
    23 to 44 tokens) under SmolLM2 through ``epjax.experiments.texts.compare_text_sets([lm], [ep-paper, strict])``
    (the call behind ``epjax texts --builtin ep-paper --builtin strict``, the model loaded as that command does),
    first call (with compilation) and warm calls, texts/s and tokens/s counting every row scored (forward,
    token-reversed and sentence-reversed); the PyTorch model on the same rows in the same batches; and the
    programs XLA compiles on the way (``jax.monitoring`` backend-compile events): the scoring function once per
    padded length, not per text.

Before timing, the script checks that both give the same total log-probabilities of the texts (float32,
|diff| < 1e-2 nats per text; in (d) per row, and the rows rebuilt here are checked to be the rows
``compare_text_sets`` scores). Times are medians over repeats after a warm-up (compile) call, the peers timed
in alternation.

    python benchmarks/lm.py            # full run, appends a section to benchmarks/RESULTS.md
    python benchmarks/lm.py --quick    # smoke run, prints only (add --out FILE to append)
    python benchmarks/lm.py --parts d  # only (d) (after the loads); --set-repeats N warm rounds in (d)
    python benchmarks/lm.py --summary-json rows.json   # also the summary rows of benchmarks/run.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from harness import (
    Job,
    Timing,
    add_out_option,
    add_summary_option,
    fmt_time,
    fmt_timing,
    footer,
    header,
    log,
    measure,
    publish,
    summary_row,
    table,
    timed,
    write_summary,
)
from peak import llama_flops, xla_flops

import epjax
from epjax import pretrained
from epjax import text as text_lib
from epjax.experiments import texts as texts_lib

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
except ImportError as err:  # the peer is a benchmark-only dependency
    raise SystemExit(f"benchmarks/lm.py needs torch and transformers: {err}") from err

TEXTS = Path(epjax.__file__).parent / "data" / "texts.json"
LOAD_TARGET_S = 5.0
ROUNDS = dict(budget_s=5.0, min_repeats=3, max_repeats=20, slow_first_s=None)  # this script's timing habit
PARTS = "abcd"
SETS = ("ep-paper", "strict")  # (d): `epjax texts --builtin ep-paper --builtin strict`
QUICK_PER_GROUP = 3  # (d) --quick: the first texts of each group of each set
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # jax.monitoring: one event per XLA compilation


def torch_batched_sums(model, bos_id: int, rows: list[np.ndarray], batch_size: int, bucket: int,
                       max_length: int) -> np.ndarray:
    """:func:`torch_sums` over the batches ``epjax.text.log_prob_sums`` forms: rows grouped by padded length."""
    out = np.zeros(len(rows))
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(text_lib.padded_length(r.size, bucket, max_length), []).append(i)
    for length, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            out[chunk] = torch_sums(model, bos_id, [rows[i] for i in chunk], length)
    return out


def torch_sums(model, bos_id: int, rows: list[np.ndarray], length: int) -> np.ndarray:
    """Sum of log p(x_t | BOS, x_<t) per row, rows padded at the end to ``length`` (causal: padding is inert)."""
    x = np.zeros((len(rows), length), np.int64)
    mask = np.zeros((len(rows), length), bool)
    for i, r in enumerate(rows):
        x[i, : r.size], mask[i, : r.size] = r, True
    inputs = torch.from_numpy(np.concatenate([np.full((len(rows), 1), bos_id), x[:, :-1]], axis=1))
    with torch.no_grad():
        logits = model(input_ids=inputs).logits.float()
        log_p = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(x)[..., None])[..., 0]
        return (log_p * torch.from_numpy(mask)).sum(-1).double().numpy()


class CompileLog:
    """XLA compilations seen through ``jax.monitoring`` while active: ``with log: ...``, then ``log.names``
    (a Counter of the compiled functions' names), ``log.name_seconds`` (compile seconds by name) and
    ``log.seconds``."""

    def __init__(self):
        self.names: Counter[str] = Counter()
        self.name_seconds: Counter[str] = Counter()
        self.seconds = 0.0
        self._on = False
        jax.monitoring.register_event_duration_secs_listener(self._event)

    def _event(self, event: str, duration: float, **kwargs) -> None:
        if self._on and event == BACKEND_COMPILE:
            name = str(kwargs.get("fun_name", "?"))
            self.names[name] += 1
            self.name_seconds[name] += duration
            self.seconds += duration

    def __enter__(self):
        self.names, self.name_seconds, self.seconds, self._on = Counter(), Counter(), 0.0, True
        return self

    def __exit__(self, *exc) -> None:
        self._on = False

    @property
    def total(self) -> int:
        return sum(self.names.values())


def text_rows(lm, texts: list[str]) -> tuple[list[np.ndarray], list[tuple[int, int, int | None]]]:
    """The rows ``epjax.text.score_texts`` scores for ``texts`` (reader rule, no truncation), in its order: per
    text the forward ids, their token reversal and, with more than one sentence, the sentence-block reversal;
    and per text the indices ``(forward, token, sentence or None)`` of its rows."""
    rows: list[np.ndarray] = []
    plan = []
    for t in texts:
        x = text_lib.text_tokens(lm.tokenizer, t, max_length=lm.model.max_length, sentences=True)
        sentences = int(text_lib.sentence_ends(x, lm.tokenizer).sum())
        plan.append((len(rows), len(rows) + 1, len(rows) + 2 if sentences > 1 else None))
        rows += [x, x[::-1].copy()]
        if sentences > 1:
            rows.append(text_lib.reverse_sentences(x, lm.tokenizer))
    return rows, plan


def uptime() -> str:
    """``uptime``'s output (the load averages over 1, 5 and 15 minutes), or the load averages alone."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def scoring_flops(model, rows: list[np.ndarray], batch_size: int, bucket: int) -> float:
    """Analytic FLOPs of ``log_prob_sums`` on ``rows``: every batch it forms, padded to ``batch_size`` rows of its
    padded length (benchmarks/peak.py ``llama_flops``)."""
    groups: Counter[int] = Counter(text_lib.padded_length(r.size, bucket, model.max_length) for r in rows)
    return sum(-(-n // batch_size) * llama_flops(model.config, length, batch_size) for length, n in groups.items())


def xla_check(model, params, length: int, batch_size: int) -> str:
    """XLA's count of one scoring batch (``vmap(model.logits)``) beside the analytic one. The decoder scans its
    layers, and XLA counts a loop body once: the comparison is with the analytic count at one layer."""
    x = jnp.zeros((batch_size, length), jnp.int32)
    xla = xla_flops(lambda p, x: jax.vmap(lambda xi: model.logits(p, xi))(x), params, x)
    one = llama_flops(dataclasses.replace(model.config, num_layers=1), length, batch_size)
    return (f"XLA's count of one batch of {batch_size} × {length} (layer scan's body once) {xla:.3g} against the "
            f"analytic count at one layer {one:.3g} ({xla / one:.2f}×: XLA also counts the elementwise ops)")


def many_sets(hf, *, quick: bool, repeats: int, batch_size: int) -> tuple[str, Timing, Timing, Timing]:
    """Part (d): the section text, and the timings of the epjax call and of the PyTorch peer (default threads,
    1 thread)."""
    lm = texts_lib.load_language_model()  # as `epjax texts` loads it: SmolLM2 from the wheel, its trained context
    sets = [texts_lib.load_builtin_text_set(name) for name in SETS]
    if quick:
        sets = {s.source: {g: t[:QUICK_PER_GROUP] for g, t in s.groups.items()} for s in sets}
        groups_of = list(sets.values())
    else:
        groups_of = [s.groups for s in sets]
    texts = list(dict.fromkeys(t for groups in groups_of for g in groups.values() for t in g))  # as the call
    num_texts = len(texts)

    def run_epjax():
        return texts_lib.compare_text_sets([lm], sets, batch_size=batch_size)

    compiles = CompileLog()
    # First call from empty compilation caches: what a fresh `epjax texts` process pays.
    jax.clear_caches()
    log(f"(d) many sets: first compare_text_sets call ({num_texts} texts) ...")
    with compiles:
        result, first_call = timed(run_epjax)
    first_names, first_compile_s = compiles.names, compiles.seconds
    first_elapsed = result.elapsed

    # The same rows, rebuilt here, then scored by log_prob_sums from empty caches again: its programs alone.
    jax.clear_caches()
    with compiles:
        rows, plan = text_rows(lm, texts)
    row_names = compiles.names
    bucket = text_lib.DEFAULT_BUCKET
    lengths = sorted({text_lib.padded_length(r.size, bucket, lm.model.max_length) for r in rows})
    log(f"(d) log_prob_sums on the {len(rows)} rows (agreement) ...")
    with compiles:
        ours = text_lib.log_prob_sums(lm.model, lm.params, rows, batch_size=batch_size, bucket=bucket)
    score_names = compiles.names
    # The scoring function: the program log_prob_sums spends (nearly all) its compile time on; the others
    # it compiles are small transfers of the batch arrays.
    scoring_fn = compiles.name_seconds.most_common(1)[0][0]
    num_scoring_programs = score_names[scoring_fn]
    scoring_compile_s = compiles.name_seconds[scoring_fn]
    num_tokens = sum(r.size for r in rows)
    text_lengths = sorted({int(rows[f].size) for f, _, _ in plan})

    # The rows are compare_text_sets' rows: its sigmas come back from these sums.
    record = {}
    for r in result.texts:
        record.setdefault(r["text"], r)
    rebuilt = max(
        max(abs(ours[f] - ours[k] - record[t]["sigma_token"]),
            abs((ours[f] - ours[s] if s is not None else 0.0) - record[t]["sigma_sentence"]))
        for t, (f, k, s) in zip(texts, plan, strict=True)
    )
    if rebuilt > 1e-6:
        raise SystemExit(f"(d): the rebuilt rows do not give compare_text_sets' sigmas (off by {rebuilt:.3g} nats)")

    def run_torch():
        return torch_batched_sums(hf, lm.tokenizer.bos_id, rows, batch_size, bucket, lm.model.max_length)

    def run_torch_1():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run_torch()
        finally:
            torch.set_num_threads(threads)

    log("(d) transformers on the same rows (agreement) ...")
    theirs, first_torch = timed(run_torch)
    max_diff = float(np.max(np.abs(ours - theirs)))
    sigma_diff = max(
        max(abs((ours[f] - ours[k]) - (theirs[f] - theirs[k])),
            0.0 if s is None else abs((ours[f] - ours[s]) - (theirs[f] - theirs[s])))
        for f, k, s in plan
    )
    if max_diff > 1e-2:
        raise SystemExit(f"(d): epjax and transformers disagree on the rows' log-probabilities by {max_diff:.3g} nats")

    log(f"(d) timing, {repeats} rounds in alternation ...")
    elapsed: list[float] = []

    def timed_epjax():
        elapsed.append(run_epjax().elapsed)

    with compiles:
        warm = measure([Job(timed_epjax, warm=lambda: None), Job(run_torch, warm=lambda: None), Job(run_torch_1)],
                       budget_s=0.0, min_repeats=repeats, max_repeats=repeats, slow_first_s=None)
    warm_compiles = compiles.total
    t_call = warm[0]._replace(first=first_call)
    t_score = Timing.of(elapsed, first_elapsed)
    t_torch = warm[1]._replace(first=first_torch)
    t_torch_1 = warm[2]

    first_scoring = first_names[scoring_fn]
    first_other = sum(first_names.values()) - first_scoring
    compilations = f"compilations: {num_scoring_programs} for {num_texts} texts"
    log(compilations)
    rows_d = []
    for name, t in (("epjax `compare_text_sets` (whole call)", t_call),
                    ("  its scoring: `score_texts` (the result's `elapsed`)", t_score),
                    (f"transformers + torch.no_grad, same rows and batches ({torch.get_num_threads()} threads)",
                     t_torch),
                    ("the same at 1 torch thread", t_torch_1)):
        rows_d.append([name, fmt_time(t.first), fmt_timing(t), f"{num_texts / t.median:.2f}",
                       f"{num_tokens / t.median:,.0f}", f"{t_torch.median / t.median:.2f}×", str(t.repeats)])
    sizes = (f"the first {QUICK_PER_GROUP} texts of each group of each set (--quick)" if quick else
             f"both shipped sets, {' and '.join(map(repr, SETS))}")
    other = ", ".join(f"{name} {n}" for name, n in row_names.most_common(6))
    text = "\n\n".join([
        "### (d) Many-sets scoring\n\n"
        f"`compare_text_sets([lm], [{', '.join(SETS)}])`: {sizes}, {num_texts} distinct texts of "
        f"{text_lengths[0]} to {text_lengths[-1]} tokens ({len(text_lengths)} distinct lengths), model loaded as "
        f"`epjax texts` does (`load_language_model()`, context {lm.model.max_length}); the call's defaults "
        f"(batches of {batch_size}, reader rule, {result.num_bootstrap} bootstrap resamples). Rows scored: "
        f"{len(rows)} ({num_texts} forward, {num_texts} token-reversed, {len(rows) - 2 * num_texts} "
        f"sentence-reversed), {num_tokens:,} real tokens, padded to {' or '.join(map(str, lengths))} tokens; "
        "texts/s and tokens/s count those. \"First call\" is from empty compilation caches (`jax.clear_caches()`); "
        f"warm: {repeats} rounds, the peers in alternation. The peer scores the prebuilt rows only (no "
        "tokenisation, no statistics); its last batch of a length is not padded to 16 rows. Agreement, before "
        f"timing: max |epjax - transformers| over the rows = {max_diff:.2e} nats (sigma, both levels: "
        f"{sigma_diff:.2e}); the rows rebuilt here give compare_text_sets' sigmas to {rebuilt:.1e} nats.\n\n"
        + table(["implementation", "first call", "warm median (best)", "texts/s", "tokens/s",
                 "speed-up vs torch (default threads)", "repeats"], rows_d),
        f"**{compilations}** ({len(rows)} rows): `log_prob_sums` on these rows from empty caches compiled "
        f"{num_scoring_programs} program(s) of the scoring function `{scoring_fn}` "
        f"({scoring_compile_s:.1f} s of XLA compile time), one per padded length "
        f"({len(lengths)}: {', '.join(map(str, lengths))}); all it compiled: "
        f"{', '.join(f'{k} ×{v}' for k, v in score_names.items())}. The first `compare_text_sets` call "
        f"compiled {sum(first_names.values())} programs in all ({first_compile_s:.1f} s of XLA compile time): "
        f"{first_scoring} of `{scoring_fn}` and {first_other} small ones of eager jax.numpy operations; "
        f"rebuilding the rows here (tokenise, `sentence_ends`, `reverse_sentences`) from empty caches compiled "
        f"{sum(row_names.values())} (most: {other}), i.e. about one set per distinct text length, not per text. "
        f"Warm rounds compiled {warm_compiles}.",
    ])
    return text, t_call, t_torch, t_torch_1


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--parts", default=PARTS, help=f"which parts to run, a subset of {PARTS!r} (default: all; "
                        "the models are loaded whatever the choice)")
    parser.add_argument("--set-repeats", type=int, default=2,
                        help="(d): warm rounds of each side, after its first call (default: 2; a call takes minutes)")
    add_out_option(parser)
    add_summary_option(parser)
    args = parser.parse_args(argv[1:])
    parts = args.parts
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts must be a non-empty subset of {PARTS!r}, got {parts!r}")
    if args.set_repeats < 1:
        parser.error(f"--set-repeats must be >= 1, got {args.set_repeats}")
    start_time = time.perf_counter()
    # full: every shipped text, and one batch of `epjax sample-lm` at its defaults (16 sequences of 120 tokens)
    num_texts, sample_batch, sample_steps = (4, 2, 16) if args.quick else (None, 16, 120)
    batch_size = 16  # `epjax texts --batch-size` default
    torch.manual_seed(0)
    path = pretrained.default_gguf_path()
    notes = [f"model: {path.name} (SmolLM2-135M, Q4_1 dequantised to float32 by both); times are \"median (best)\" "
             "after a warm-up call; \"compile\" is the first call minus the median."]
    if "d" in parts:
        notes += [f"parts: {', '.join(f'({p})' for p in parts)}; CPU (`lscpu` model name): {lscpu_model()}",
                  f"`uptime` at start: `{uptime()}`"]
    head = header("lm.py", argv, peers=[torch, transformers], device=f"torch threads {torch.get_num_threads()}",
                  notes=notes)

    # (a) load time: one call each (the file is in the page cache after the first read of either)
    log("(a) load ...")
    context = max(sample_steps, 64)  # the texts have up to 38 tokens
    (model, params, tok), load_epjax = timed(lambda: pretrained.load_gguf(path, context_length=context))
    hf, load_hf = timed(
        lambda: AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    )
    blocks = [head]
    targets = []
    summary: list[dict] = []
    family, model_name = "SmolLM2", "SmolLM2-135M (float32)"
    if "a" in parts:
        summary.append(summary_row("lm", family, "GGUF load", model_name, [load_epjax],
                                   "transformers from_pretrained", [load_hf], note="one call each, not alternated",
                                   target_s=LOAD_TARGET_S))
        rows_a = [["epjax `load_gguf`", fmt_time(load_epjax), "1.00×"],
                  ["transformers `from_pretrained(gguf_file=...)`", fmt_time(load_hf), f"{load_hf / load_epjax:.2f}×"]]
        blocks.append("### (a) GGUF load time\n\nOne call each (wall clock, includes dequantisation).\n\n"
                      + table(["loader", "time", "÷ epjax"], rows_a))

    if "b" in parts:
        # (b) scoring: forward and token-reversed rows of the first texts, grouped by padded length
        groups = json.loads(TEXTS.read_text())["groups"]
        texts = [t for g in groups.values() for t in g][:num_texts]
        ids = [np.asarray(tok.encode(t), np.int32) for t in texts]
        rows = ids + [r[::-1].copy() for r in ids]
        num_tokens = sum(r.size for r in rows)
        bucket = text_lib.DEFAULT_BUCKET
        lengths = sorted({text_lib.padded_length(r.size, bucket, model.max_length) for r in rows})
        score_fns = [
            lambda: text_lib.log_prob_sums(model, params, rows, batch_size=batch_size, bucket=bucket),
            lambda: torch_batched_sums(hf, tok.bos_id, rows, batch_size, bucket, model.max_length),
        ]
        # The agreement check is each side's first call (epjax compiles one function per padded length in it).
        (ours, first_ours), (theirs, first_theirs) = (timed(fn) for fn in score_fns)
        max_diff = float(np.max(np.abs(ours - theirs)))
        if max_diff > 1e-2:
            raise SystemExit(f"epjax and transformers disagree on the texts' log-probabilities by {max_diff:.3g} nats")
        log("(b) scoring ...")
        score = measure([Job(fn, warm=lambda: None) for fn in score_fns], **ROUNDS)  # warmed up by the check
        score = [t._replace(first=first) for t, first in zip(score, (first_ours, first_theirs), strict=True)]
        rows_b = []
        for name, t in zip(("epjax `log_prob_sums` (jit)", "transformers + torch.no_grad"), score, strict=True):
            rows_b.append([name, fmt_timing(t), fmt_time(t.compile), f"{num_tokens / t.median:,.0f}",
                           f"{score[1].median / t.median:.2f}×", str(t.repeats)])
        blocks.append(
            f"### (b) Scoring throughput\n\n{len(texts)} shipped texts, forward and token-reversed ({len(rows)} rows, "
            f"{num_tokens} real tokens, padded to {' or '.join(map(str, lengths))} tokens, batches of {batch_size}); "
            "BOS prepended; tokens/s counts real tokens. The first call is the agreement check (epjax compiles "
            f"there). Agreement of the per-row sums: max |epjax - transformers| = {max_diff:.2e} nats.\n\n"
            + table(["implementation", "median (best)", "compile", "tokens/s", "speed-up vs torch", "repeats"], rows_b))
        targets.append(("scoring throughput at least PyTorch's", f"{score[1].median / score[0].median:.2f}× torch",
                        score[0].median <= score[1].median))
        flops = scoring_flops(model, rows, batch_size, bucket)
        check = xla_check(model, params, lengths[0], batch_size)
        summary.append(summary_row(
            "lm", family, "score texts", f"{model_name}, {len(rows)} rows in batches of {batch_size}", score[0],
            "transformers", score[1], compile_s=score[0].compile, flops=flops, units=num_tokens, unit="tokens",
            note=f"FLOPs L (4 T D H K + 4 T D G K + 4 T² H K + 6 T D F) + 2 T D V per padded row; {check}",
            **({} if args.quick else {"peak_target": 0.5})))

    if "c" in parts:
        # (c) sampling with a KV cache: sample i from fold_in(key, i), as epjax's drivers draw
        log("(c) sampling ...")

        def sample_batch_fn(params, key, indices):
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
            return jax.vmap(lambda k: model.sample_with_log_probs(k, params, sample_steps))(keys)

        sample_batch_fn = jax.jit(sample_batch_fn, compiler_options=epjax.compiler_options(model) or None)
        indices = jnp.arange(sample_batch, dtype=jnp.uint32)

        def sample_epjax():
            return sample_batch_fn(params, jax.random.key(0), indices)

        start = torch.full((sample_batch, 1), tok.bos_id, dtype=torch.long)

        def sample_hf():
            with torch.no_grad():
                return hf.generate(start, attention_mask=torch.ones_like(start), do_sample=True, use_cache=True,
                                   top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=sample_steps,
                                   min_new_tokens=sample_steps, pad_token_id=tok.bos_id)

        sample = measure([sample_epjax, sample_hf], **{**ROUNDS, "budget_s": 10.0, "min_repeats": 2})
        rows_c = []
        for name, t in zip(("epjax `sample_with_log_probs` (vmap, jit)", "transformers `generate(use_cache=True)`"),
                           sample, strict=True):
            rows_c.append([name, fmt_timing(t), fmt_time(t.compile), f"{sample_batch * sample_steps / t.median:,.1f}",
                           f"{sample[1].median / t.median:.2f}×", str(t.repeats)])
        blocks.append(
            f"### (c) KV-cache sampling throughput\n\nBatch {sample_batch}, T = {sample_steps} new tokens from BOS at "
            f"temperature 1 (epjax: static cache of {context} tokens; transformers: dynamic cache).\n\n"
            + table(["implementation", "median (best)", "compile", "tokens/s", "speed-up vs torch", "repeats"], rows_c))
        summary.append(summary_row(
            "lm", family, "KV-cache sampling", f"{model_name}, {sample_batch} × {sample_steps} tokens", sample[0],
            "transformers generate", sample[1], compile_s=sample[0].compile, units=sample_batch * sample_steps,
            unit="tokens"))
        targets.append(("KV-cache sampling throughput at least PyTorch's",
                        f"{sample[1].median / sample[0].median:.2f}× torch", sample[0].median <= sample[1].median))

    if "d" in parts:
        text_d, t_call, t_torch, t_torch_1 = many_sets(hf, quick=args.quick, repeats=args.set_repeats,
                                                       batch_size=batch_size)
        blocks.append(text_d)
        size_d = f"{model_name}, {'quick subset of ' if args.quick else ''}{' + '.join(SETS)}"
        for peer_name, t in (("transformers", t_torch), ("transformers (1 thread)", t_torch_1)):
            summary.append(summary_row("lm", family, "compare_text_sets (many sets)", size_d, t_call, peer_name, t,
                                       compile_s=t_call.compile, note="whole call against scoring the same rows"))
        targets.append(("many-sets scoring (`compare_text_sets`, whole call) at least PyTorch's",
                        f"{t_torch.median / t_call.median:.2f}× torch ({t_torch_1.median / t_call.median:.2f}× "
                        "torch at 1 thread)", t_call.median <= t_torch.median))

    if "a" in parts:
        targets.append((f"GGUF load in a few seconds (≤ {LOAD_TARGET_S:g} s)", fmt_time(load_epjax),
                        load_epjax <= LOAD_TARGET_S))
    blocks.append("### Targets\n\n" + "\n".join(
        f"- {what}: {figure}: **{'met' if ok else 'NOT met'}**." for what, figure, ok in targets))
    if "d" in parts:
        blocks.append(f"{footer(start_time)} `uptime` at the end: `{uptime()}`. The machine was shared with other "
                      "work during this run: the figures are under that load (see the load averages above).")
    publish("\n\n".join(blocks), out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main()
