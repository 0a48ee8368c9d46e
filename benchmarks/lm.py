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
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from harness import Job, add_out_option, fmt_time, fmt_timing, header, log, measure, publish, table, timed

import epjax
from epjax import pretrained
from epjax import text as text_lib

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
except ImportError as err:  # the peer is a benchmark-only dependency
    raise SystemExit(f"benchmarks/lm.py needs torch and transformers: {err}") from err

TEXTS = Path(epjax.__file__).parent / "data" / "texts.json"
LOAD_TARGET_S = 5.0
ROUNDS = dict(budget_s=5.0, min_repeats=3, max_repeats=20, slow_first_s=None)  # this script's timing habit


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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    add_out_option(parser)
    args = parser.parse_args(argv[1:])
    # full: every shipped text, and one batch of `epjax sample-lm` at its defaults (16 sequences of 120 tokens)
    num_texts, sample_batch, sample_steps = (4, 2, 16) if args.quick else (None, 16, 120)
    batch_size = 16  # `epjax texts --batch-size` default
    torch.manual_seed(0)
    path = pretrained.default_gguf_path()
    head = header(
        "lm.py",
        argv,
        peers=[torch, transformers],
        device=f"torch threads {torch.get_num_threads()}",
        notes=[f"model: {path.name} (SmolLM2-135M, Q4_1 dequantised to float32 by both); times are \"median (best)\" "
               "after a warm-up call; \"compile\" is the first call minus the median."],
    )

    # (a) load time: one call each (the file is in the page cache after the first read of either)
    log("(a) load ...")
    context = max(sample_steps, 64)  # the texts have up to 38 tokens
    (model, params, tok), load_epjax = timed(lambda: pretrained.load_gguf(path, context_length=context))
    hf, load_hf = timed(
        lambda: AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    )

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

    rows_a = [["epjax `load_gguf`", fmt_time(load_epjax), "1.00×"],
              ["transformers `from_pretrained(gguf_file=...)`", fmt_time(load_hf), f"{load_hf / load_epjax:.2f}×"]]
    rows_b, rows_c = [], []
    for name, t in zip(("epjax `log_prob_sums` (jit)", "transformers + torch.no_grad"), score, strict=True):
        rows_b.append([name, fmt_timing(t), fmt_time(t.compile), f"{num_tokens / t.median:,.0f}",
                       f"{score[1].median / t.median:.2f}×", str(t.repeats)])
    for name, t in zip(("epjax `sample_with_log_probs` (vmap, jit)", "transformers `generate(use_cache=True)`"),
                       sample, strict=True):
        rows_c.append([name, fmt_timing(t), fmt_time(t.compile), f"{sample_batch * sample_steps / t.median:,.1f}",
                       f"{sample[1].median / t.median:.2f}×", str(t.repeats)])
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
    publish(section, out=args.out, quick=args.quick)


if __name__ == "__main__":
    main()
