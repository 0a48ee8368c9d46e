"""Benchmarks of the pretrained language model (SmolLM2-135M GGUF), float32, with transformers + PyTorch as the peer.

Three parts, in one run on one machine:

(a) GGUF load time: ``epjax.pretrained.load_gguf`` (read + dequantise the Q4_1 file to float32 jnp arrays,
    rebuild the tokenizer) against ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` (float32);
(b) scoring throughput (tokens/s) of the shipped texts, forward and token-reversed (what ``epjax texts``
    does, at its batch size 16): ``epjax.text.log_prob_sums`` (rows grouped by padded length, batches of 16,
    one compilation per length) against the PyTorch model on the same batches under ``torch.no_grad``
    (log-softmax, gather, masked sum; its last batch of a length is not padded to 16 rows, epjax's is);
(c) KV-cache sampling throughput (tokens/s) from BOS at temperature 1: ``model.sample_with_log_probs``
    vmapped over a batch (jitted) against ``generate(do_sample=True, use_cache=True, top_k=0)`` with the
    same batch size and length.

Before timing, the script checks that both give the same total log-probabilities of the texts (float32,
|diff| < 1e-2 nats per text). Times are medians over repeats after a warm-up (compile) call, the peers timed
in alternation.

    python benchmarks/lm.py            # full run, appends a section to benchmarks/RESULTS.md
    python benchmarks/lm.py --quick    # smoke run, prints only (add --out FILE to append)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import epjax
from epjax import _batching as batching
from epjax import pretrained
from epjax import text as text_lib

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
except ImportError as err:  # the peer is a benchmark-only dependency
    raise SystemExit(f"benchmarks/lm.py needs torch and transformers: {err}") from err

RESULTS = Path(__file__).with_name("RESULTS.md")
TEXTS = Path(epjax.__file__).parent / "data" / "texts.json"
LOAD_TARGET_S = 5.0


class Timing(NamedTuple):
    first: float
    median: float
    best: float
    repeats: int


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds)``, blocking on the result."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def measure_together(fns: list[Callable[[], object]], *, budget_s: float = 5.0, min_repeats: int = 3,
                     max_repeats: int = 20, first: list[float] | None = None) -> list[Timing]:
    """Warm up each of ``fns``, then time them round-robin (blocking on results) until the budget is spent.

    ``first``: the times of calls already made (the first call of each, compilation included); no warm-up then.
    """
    if first is None:
        first = [timed(fn)[1] for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    total = 0.0
    while len(times[0]) < max_repeats and (len(times[0]) < min_repeats or total < budget_s):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
            total += ts[-1]
    return [Timing(f, statistics.median(ts), min(ts), len(ts)) for f, ts in zip(first, times, strict=True)]


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def torch_batched_sums(model, bos_id: int, rows: list[np.ndarray], batch_size: int, bucket: int,
                       max_length: int) -> np.ndarray:
    """:func:`torch_sums` over the batches ``epjax.text.log_prob_sums`` forms: rows grouped by padded length."""
    out = np.zeros(len(rows))
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(text_lib._bucket(r.size, bucket, max_length), []).append(i)
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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--out", default=None, help=f"markdown file to append to (default: {RESULTS} for a full "
                        "run; a --quick run only prints unless --out is given; '-' prints only)")
    args = parser.parse_args(argv[1:])
    out = args.out if args.out is not None else (None if args.quick else str(RESULTS))
    out = None if out == "-" else out
    # full: every shipped text, and one batch of `epjax sample-lm` at its defaults (16 sequences of 120 tokens)
    num_texts, sample_batch, sample_steps = (4, 2, 16) if args.quick else (None, 16, 120)
    batch_size = 16  # `epjax texts --batch-size` default
    torch.manual_seed(0)
    path = pretrained.default_gguf_path()
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    # (a) load time: one call each (the file is in the page cache after the first read of either)
    print("(a) load ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    context = max(sample_steps, 64)  # the texts have up to 38 tokens
    model, params, tok = pretrained.load_gguf(path, context_length=context)
    jax.block_until_ready(params)
    load_epjax = time.perf_counter() - t0
    t0 = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    hf.eval()
    load_hf = time.perf_counter() - t0

    # (b) scoring: forward and token-reversed rows of the first texts, padded to one bucket
    groups = json.loads(TEXTS.read_text())["groups"]
    texts = [t for g in groups.values() for t in g][:num_texts]
    ids = [np.asarray(tok.encode(t), np.int32) for t in texts]
    rows = ids + [r[::-1].copy() for r in ids]
    num_tokens = sum(r.size for r in rows)
    bucket = text_lib.DEFAULT_BUCKET
    lengths = sorted({text_lib._bucket(r.size, bucket, model.max_length) for r in rows})
    score_fns = [
        lambda: text_lib.log_prob_sums(model, params, rows, batch_size=batch_size, bucket=bucket),
        lambda: torch_batched_sums(hf, tok.bos_id, rows, batch_size, bucket, model.max_length),
    ]
    # The agreement check is each side's first call (epjax compiles one function per padded length in it).
    (ours, first_ours), (theirs, first_theirs) = (timed(fn) for fn in score_fns)
    max_diff = float(np.max(np.abs(ours - theirs)))
    if max_diff > 1e-2:
        raise SystemExit(f"epjax and transformers disagree on the texts' log-probabilities by {max_diff:.3g} nats")
    print("(b) scoring ...", file=sys.stderr, flush=True)
    score = measure_together(score_fns, first=[first_ours, first_theirs])

    # (c) sampling with a KV cache
    print("(c) sampling ...", file=sys.stderr, flush=True)
    keys = jnp.arange(sample_batch, dtype=jnp.uint32)
    # The compiled batch epjax.text samples with (epjax's one batching core).
    sample_batch_fn = batching.batch_function(text_lib._sample_with_log_probs, model, (sample_steps,))

    def sample_epjax():
        return sample_batch_fn(params, jax.random.key(0), keys)

    start = torch.full((sample_batch, 1), tok.bos_id, dtype=torch.long)

    def sample_hf():
        with torch.no_grad():
            return hf.generate(start, attention_mask=torch.ones_like(start), do_sample=True, use_cache=True,
                               top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=sample_steps,
                               min_new_tokens=sample_steps, pad_token_id=tok.bos_id)

    sample = measure_together([sample_epjax, sample_hf], budget_s=10.0, min_repeats=2)

    import jaxlib

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = "\n".join([
        f"## {now} — benchmarks/lm.py",
        "",
        f"- device: CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores; `jax.devices()` = "
        f"`{jax.devices()}`; torch threads {torch.get_num_threads()}; load average at start {load_avg}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, epjax {epjax.__version__}",
        f"- command: `{shlex.join(['python', *argv])}`",
        f"- model: {path.name} (SmolLM2-135M, Q4_1 dequantised to float32 by both); times are \"median (best)\" "
        "after a warm-up call; \"compile\" is the first call minus the median.",
    ])
    rows_a = [["epjax `load_gguf`", fmt_time(load_epjax), "1.00×"],
              ["transformers `from_pretrained(gguf_file=...)`", fmt_time(load_hf), f"{load_hf / load_epjax:.2f}×"]]
    rows_b, rows_c = [], []
    for name, t in zip(("epjax `log_prob_sums` (jit)", "transformers + torch.no_grad"), score, strict=True):
        rows_b.append([name, f"{fmt_time(t.median)} ({fmt_time(t.best)})", fmt_time(max(t.first - t.median, 0)),
                       f"{num_tokens / t.median:,.0f}", f"{score[1].median / t.median:.2f}×", str(t.repeats)])
    for name, t in zip(("epjax `sample_with_log_probs` (vmap, jit)", "transformers `generate(use_cache=True)`"),
                       sample, strict=True):
        rows_c.append([name, f"{fmt_time(t.median)} ({fmt_time(t.best)})", fmt_time(max(t.first - t.median, 0)),
                       f"{sample_batch * sample_steps / t.median:,.1f}", f"{sample[1].median / t.median:.2f}×",
                       str(t.repeats)])
    section = "\n\n".join([
        head,
        "### (a) GGUF load time\n\nOne call each (wall clock, includes dequantisation).\n\n"
        + table(["loader", "time", "÷ epjax"], rows_a),
        f"### (b) Scoring throughput\n\n{len(texts)} shipped texts, forward and token-reversed ({len(rows)} rows, "
        f"{num_tokens} real tokens, padded to {' or '.join(map(str, lengths))} tokens, batches of {batch_size}); "
        "BOS prepended; tokens/s counts real tokens. The first call is the agreement check (epjax compiles there). "
        f"Agreement of the per-row sums: max |epjax - transformers| = {max_diff:.2e} nats.\n\n"
        + table(["implementation", "median (best)", "compile", "tokens/s", "speed-up vs torch", "repeats"], rows_b),
        f"### (c) KV-cache sampling throughput\n\nBatch {sample_batch}, T = {sample_steps} new tokens from BOS at "
        "temperature 1 (epjax: static cache of "
        f"{context} tokens; transformers: dynamic cache).\n\n"
        + table(["implementation", "median (best)", "compile", "tokens/s", "speed-up vs torch", "repeats"], rows_c),
        "### Targets\n\n" + "\n".join(
            f"- {what}: {figure}: **{'met' if ok else 'NOT met'}**."
            for what, figure, ok in [
                ("scoring throughput at least PyTorch's", f"{score[1].median / score[0].median:.2f}× torch",
                 score[0].median <= score[1].median),
                ("KV-cache sampling throughput at least PyTorch's", f"{sample[1].median / sample[0].median:.2f}× torch",
                 sample[0].median <= sample[1].median),
                (f"GGUF load in a few seconds (≤ {LOAD_TARGET_S:g} s)", fmt_time(load_epjax),
                 load_epjax <= LOAD_TARGET_S),
            ]
        ),
    ])
    print(section)
    if out:
        with Path(out).open("a") as f:
            f.write("\n" + section + "\n")
        print(f"appended to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
