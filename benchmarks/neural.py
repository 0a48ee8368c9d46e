"""Monte Carlo EP throughput of the neural families (RNN, Transformer, SSM) against the same work in PyTorch.

For every trajectory both sides do the same two things: sample ``T`` tokens ancestrally from the model,
collecting the forward log-probabilities on the way, then score the token-reversed sequence in one parallel
pass (teacher forcing), ``sigma = sum log p(x) - sum log p(reversed x)``. epjax runs the public call
``epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)``; the peer is a
plain eager PyTorch program (``torch.inference_mode``, float32) built from the *same* parameters,
``benchmarks/torch_peers.py``: ``torch.nn.GRU`` / ``LSTM`` / ``RNN`` for ``epjax.rnn``, a handwritten GPT with
a key/value cache for ``epjax.transformer``, S4D with the FFT-convolution scorer and Mamba with a sequential
selective scan for ``epjax.ssm`` (that module's docstring gives each method).

Before timing, every peer is checked against epjax in float64 (same parameters, per-step log-probabilities
of epjax samples, and the peer's own sampler's forward log-probabilities re-scored by epjax) and the
benchmark-size float32 models are compared too. Then:

(a) Monte Carlo EP throughput, epjax public call vs the PyTorch program with its default thread count and
    with ``torch.set_num_threads(1)``, plus the sampling and scoring parts timed on their own;
(b) scoring cost against T (``log_probs`` of the reversed sequences under ``jax.vmap``, jitted; the peer's
    scoring at 1 thread beside it), with the exponent of ``time ~ T^k`` fitted by least squares on log-log:
    ~1 for the recursive families, rising towards 2 for the Transformer once attention outweighs the
    per-token matrix products.

Threads: XLA's CPU client runs on its own intra-op thread pool (all cores) and cannot be resized once jax is
imported; ``--jax-threads 1`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` before the import, so
that a whole run is single-threaded on the JAX side. PyTorch is timed in the same run at its default
``torch.get_num_threads()`` and at ``torch.set_num_threads(1)``. The section header records which.

    python benchmarks/neural.py            # full run, appends to RESULTS.md
    python benchmarks/neural.py --quick    # smoke run with tiny sizes, prints only (add --out FILE to append)
    python benchmarks/neural.py --repeats 1 --torch-default-repeats 1   # the shortest full run (busy machine)
    python benchmarks/neural.py --summary-json rows.json   # also the summary rows of benchmarks/run.py
"""

from __future__ import annotations

import os
import sys

if "--jax-threads=1" in sys.argv or " ".join(sys.argv).find("--jax-threads 1") >= 0:
    # XLA reads its flags once, when the CPU client starts: this must happen before jax is imported.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from typing import Any  # noqa: E402

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from harness import (  # noqa: E402
    Job,
    Timing,
    add_out_option,
    add_summary_option,
    compile_timed,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    fmt_timing,
    footer,
    header,
    log,
    measure,
    measure_rounds,
    prose,
    publish,
    summary_row,
    table,
    write_summary,
)
from peak import fit_exponent, rnn_flops, transformer_flops  # noqa: E402

import epjax  # noqa: E402
from epjax import rnn, ssm, transformer  # noqa: E402

try:
    import torch
    from torch_peers import DEFAULT_THREADS as TORCH_DEFAULT_THREADS
    from torch_peers import TorchPeer, make_peer, torch_call
except ImportError as err:  # the peer is a benchmark-only dependency (torch is in the [test] extra)
    raise SystemExit(f"benchmarks/neural.py needs torch (pip install torch): {err}") from err


# ---------------------------------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    vocab: int
    width: int
    layers: int
    heads: int  # Transformer heads
    d_state: int  # SSM state per channel
    T: int  # trajectory length of the Monte Carlo runs
    batch: int  # trajectories per Monte Carlo call (= batch_size: one compiled batch)
    scaling_T: tuple[int, ...]  # lengths of the scoring-cost sweep
    scaling_batch: int
    budget_s: float  # seconds per timed group, summed over its jobs (rounds continue until reached)
    families: tuple[str, ...]


FULL = Sizes(256, 256, 2, 4, 16, 256, 256, (64, 128, 256, 512, 1024), 16, 20.0,
             ("gru", "lstm", "elman", "transformer", "s4d", "mamba"))  # fmt: skip
QUICK = Sizes(16, 32, 2, 2, 4, 32, 16, (16, 32, 64, 128), 4, 0.5,
              ("gru", "lstm", "elman", "transformer", "s4d", "mamba"))  # fmt: skip
ROUNDS = dict(max_repeats=20, slow_first_s=None)  # this script's timing habit: at most 20 rounds, however slow


def make_model(family: str, s: Sizes, context: int, dtype: str = "float32"):
    """The epjax model of ``family`` at sizes ``s`` (``context``: the Transformer's context length)."""
    if family in rnn.CELLS:
        return rnn.Model(rnn.Config(s.vocab, s.width, num_layers=s.layers, cell=family, dtype=dtype))
    if family == "transformer":
        return transformer.Model(
            transformer.Config(s.vocab, context, s.layers, s.heads, s.width, dtype=dtype)
        )
    return ssm.Model(
        ssm.Config(s.vocab, kind=family, d_model=s.width, num_layers=s.layers, d_state=s.d_state, dtype=dtype)
    )


def describe_model(family: str, model) -> str:
    c = model.config
    if family in rnn.CELLS:
        return f"{family.upper() if family != 'elman' else 'Elman'} L={c.num_layers} H={c.hidden_size}"
    if family == "transformer":
        return f"GPT L={c.num_layers} D={c.embed_size} heads={c.num_heads} MLP {c.mlp_ratio}D"
    if family == "s4d":
        return f"S4D L={c.num_layers} D={c.d_model} N={c.d_state} (complex)"
    return f"Mamba L={c.num_layers} D={c.d_model} E={c.d_inner} N={c.d_state} conv {c.d_conv}"


# ---------------------------------------------------------------------------------------------------- peers


# ---------------------------------------------------------------------------------------------------- epjax


def epjax_parts(model, T: int):
    """Batched sampling (``sample_with_log_probs``) and scoring of the reversed sequences, to be jitted."""

    def sample(params, keys):  # keys [B] -> tokens [B, T], log-probs [B, T]
        return jax.vmap(lambda k: model.sample_with_log_probs(k, params, T))(keys)

    def score(params, x):  # x [B, T] -> [B] log-likelihood of each reversed sequence
        return jax.vmap(lambda xi: jnp.sum(model.log_probs(params, epjax.reverse_tokens(xi))))(x)

    return sample, score


def aot(model, fn, *args):
    """Compile ``fn`` for ``args`` ahead of time (no run), as epjax compiles its own entry points for
    ``model`` (``compiler_options=epjax.compiler_options(model)``); the call and the compile seconds."""
    compiled, seconds = compile_timed(fn, *args, compiler_options=epjax.compiler_options(model) or None)
    return partial(compiled, *args), seconds


# ---------------------------------------------------------------------------------------------------- checks


def _agreement(family, model, params, peer, T: int, B: int) -> tuple[float, float, float]:
    """Max |Δ log p_t| between epjax and the peer on epjax samples (forward and reversed), max |Δ| between
    the peer sampler's forward log-probs and epjax's score of the same tokens, and the spread of log p_t."""
    keys = jax.random.split(jax.random.key(11), B)
    x = jax.vmap(lambda k: model.sample(k, params, T))(keys)
    both = jnp.concatenate([x, x[:, ::-1]])
    ours = np.asarray(jax.vmap(lambda xi: model.log_probs(params, xi))(both))
    with torch.inference_mode():
        theirs = peer.log_probs(torch.from_numpy(np.array(both)).long()).numpy()
        xt, fwd = peer.sample(B, T, torch.Generator().manual_seed(11), per_step=True)
    rescored = np.asarray(jax.vmap(lambda xi: model.log_probs(params, xi))(jnp.asarray(xt.numpy(), jnp.int32)))
    return (
        float(np.max(np.abs(ours - theirs))),
        float(np.max(np.abs(rescored - fwd.numpy()))),
        float(np.std(ours)),
    )


F64_TOL = 1e-9  # float64 on both sides: only round-off remains (|log p_t| ~ 5, ~1e-14 relative per op)


def check_agreement(s: Sizes) -> str:
    """Per-step log-probabilities, epjax vs peer: float64 (gated) and float32 at benchmark size (reported)."""
    rows = []
    T_check, B_check = min(s.T, 64), 4
    for family in s.families:
        with jax.enable_x64(True):
            model = make_model(family, s, T_check, "float64")
            params = model.init(jax.random.key(5))
            peer = make_peer(family, model, params)
            d64, s64, spread = _agreement(family, model, params, peer, T_check, B_check)
        model = make_model(family, s, T_check)
        params = model.init(jax.random.key(5))
        d32, s32, _ = _agreement(family, model, params, make_peer(family, model, params), T_check, B_check)
        rows.append(
            [
                family,
                f"{B_check} × {T_check}",
                f"{spread:.3f}",
                f"{d64:.1e}",
                f"{s64:.1e}",
                f"{d32:.1e}",
                f"{s32:.1e}",
            ]
        )
        log(f"  check {family}: float64 {d64:.1e} / {s64:.1e}, float32 {d32:.1e} / {s32:.1e}")
        if not (d64 < F64_TOL and s64 < F64_TOL):
            raise SystemExit(
                f"the PyTorch peer of {family} disagrees with epjax in float64: max |Δ log p_t| = {d64:.2e} "
                f"(epjax samples), {s64:.2e} (peer samples); tolerance {F64_TOL:.0e}"
            )
    return table(
        [
            "family",
            "B × T",
            "sd of log p_t",
            "float64: max |Δ log p_t|, scoring",
            "float64: sampler's log-probs",
            "float32: scoring",
            "float32: sampler's log-probs",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- (a)


def num_parameters(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _torch_jobs(peer: TorchPeer, B: int, T: int, threads: int, max_repeats: int | None, kept: dict):
    """Sampling and scoring jobs of the peer at ``threads``; the scoring job scores the latest sample.

    Each round runs sampling before scoring, so one round is one full EP computation and its sigma values
    (forward log-probabilities minus the reversed score) are kept in ``kept``.
    """
    gen = torch.Generator().manual_seed(1)

    def sample():
        kept["x"], kept["forward"] = peer.sample(B, T, gen)

    def score():
        kept["sigma"] = kept["forward"] - peer.score_reversed(kept["x"])

    def warm():  # a small run through the same code paths (thread pool, allocator, kernels)
        x, _ = peer.sample(2, min(T, 4), gen)
        peer.log_probs(x.flip(1))

    return [
        Job(torch_call(sample, threads), torch_call(warm, threads), max_repeats),
        Job(torch_call(score, threads), lambda: None, max_repeats),
    ]


def _public_call(kept: dict, key, model, params, T: int, B: int) -> float:
    kept["epjax"] = epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)
    return kept["epjax"].mean


def scoring_flops(family: str, model, T: int, B: int) -> tuple[float | None, str]:
    """Analytic FLOPs of scoring B sequences of T tokens (benchmarks/peak.py), and how they were counted."""
    if family == "transformer":
        return transformer_flops(model.config, T, B), "L (8 T D² + 4 r T D² + 4 T² D) + 2 T D V per sequence"
    if family in rnn.CELLS:
        return rnn_flops(model.config, T, B)[0], "T [Σ_l 2 g H (in_l + H) + 2 H V] per sequence"
    return None, ""


def xla_count(run) -> float | None:
    """XLA's flop count of an ahead-of-time compiled call (``aot``'s partial), loop bodies counted once."""
    try:
        cost = run.func.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"])
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


LARGE_BATCH = 64  # scoring rows from this batch size on carry the >= 50 % of matmul peak target (Transformer)


def bench_monte_carlo(s: Sizes, min_repeats: int, default_threads_repeats: int | None, summary: list[dict]):
    rows, part_rows = [], []
    T, B = s.T, s.batch
    for family in s.families:
        model = make_model(family, s, T)
        params = model.init(jax.random.key(0))
        peer = make_peer(family, model, params)
        key = jax.random.key(1)
        kept: dict[str, Any] = {}
        run_epjax = partial(_public_call, kept, key, model, params, T, B)

        # epjax's parts, compiled ahead of time (no warm-up run needed); the same keys as the public call
        sample, score = epjax_parts(model, T)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(B, dtype=jnp.uint32))
        run_sample, compile_sample = aot(model, sample, params, keys)
        x = run_sample()[0]
        run_score, compile_score = aot(model, score, params, x)
        kept_1: dict[str, Any] = {}
        kept_n: dict[str, Any] = {}
        jobs = [
            Job(run_epjax),
            Job(run_sample, lambda: None),
            Job(run_score, lambda: None),
            *_torch_jobs(peer, B, T, 1, None, kept_1),
            *_torch_jobs(peer, B, T, TORCH_DEFAULT_THREADS, default_threads_repeats, kept_n),
        ]
        log(f"  MC {family} ...")
        firsts, times = measure_rounds(jobs, budget_s=s.budget_s, min_repeats=min_repeats, **ROUNDS)
        te = Timing.of(times[0], firsts[0])
        pe_s, pe_c = Timing.of(times[1], compile_sample), Timing.of(times[2], compile_score)
        p1_s, p1_c, pn_s, pn_c = (Timing.of(t) for t in times[3:7])
        # a PyTorch EP computation is one sampling call followed by one scoring call: sum them per round
        t1 = Timing.of([a + b for a, b in zip(times[3], times[4], strict=True)])
        tn = Timing.of([a + b for a, b in zip(times[5], times[6], strict=True)])

        flops, formula = scoring_flops(family, model, T, B)
        xla = xla_count(run_score)
        nd = TORCH_DEFAULT_THREADS
        size = f"{describe_model(family, model)}, T = {T}, B = {B}"
        common = dict(units=B * T, unit="tokens")
        for task, ours, peer_name, theirs, compile_s, extra in (
            ("Monte Carlo EP", te, "torch (1 thread)", t1, te.compile, {}),
            ("Monte Carlo EP", te, f"torch ({nd} threads)", tn, te.compile, {}),
            ("sample", pe_s, "torch (1 thread)", p1_s, compile_sample, {}),
            ("sample", pe_s, f"torch ({nd} threads)", pn_s, compile_sample, {}),
            ("score reversed", pe_c, "torch (1 thread)", p1_c, compile_score, {"flops": flops}),
            ("score reversed", pe_c, f"torch ({nd} threads)", pn_c, compile_score, {"flops": flops}),
        ):
            note = ""
            if extra.get("flops") is not None:
                note = f"FLOPs {formula}; XLA's count {xla:.3g} (loop bodies once)" if xla else f"FLOPs {formula}"
                if family == "transformer" and B >= LARGE_BATCH:
                    extra = {**extra, "peak_target": 0.5}
            summary.append(summary_row("neural", family, task, size, ours, peer_name, theirs, compile_s=compile_s,
                                       note=note, **common, **extra))

        est = kept["epjax"]
        sig = kept_1["sigma"].double().numpy()
        t_mean, t_se = float(sig.mean()), float(sig.std(ddof=1) / math.sqrt(sig.size))
        z = (est.mean - t_mean) / math.hypot(est.stderr, t_se)
        tokens = B * T
        rows.append(
            [
                describe_model(family, model),
                f"{num_parameters(params) / 1e6:.2f} M",
                fmt_timing(te),
                f"{fmt_rate(B / te.median)} / {fmt_rate(tokens / te.median)}",
                fmt_timing(t1),
                f"{fmt_rate(B / t1.median)} / {fmt_rate(tokens / t1.median)}",
                f"**{fmt_ratio(t1, te)}**",
                fmt_timing(tn),
                fmt_ratio(tn, te),
                fmt_time(max(te.first - te.median, 0.0)),
                f"{te.repeats} / {t1.repeats} / {tn.repeats}",
                f"{est.mean:.3f} ± {est.stderr:.3f} / {t_mean:.3f} ± {t_se:.3f} (z {z:+.1f})",
            ]
        )
        part_rows.append(
            [
                family,
                fmt_timing(pe_s),
                fmt_timing(p1_s),
                fmt_ratio(p1_s, pe_s),
                fmt_timing(pn_s),
                fmt_timing(pe_c),
                fmt_timing(p1_c),
                fmt_ratio(p1_c, pe_c),
                fmt_timing(pn_c),
                f"{fmt_time(compile_sample)} / {fmt_time(compile_score)}",
            ]
        )
        log(
            f"  MC {family}: epjax {fmt_timing(te)}, torch 1 thread {fmt_timing(t1)}, "
            f"torch {TORCH_DEFAULT_THREADS} threads {fmt_timing(tn)}"
        )
    main = table(
        [
            "model",
            "params",
            "epjax EP median (best)",
            "epjax traj/s / tokens/s",
            "torch (1 thread) median (best)",
            "torch (1 thread) traj/s / tokens/s",
            "epjax ÷ torch (1 thread)",
            f"torch ({TORCH_DEFAULT_THREADS} threads, default) median (best)",
            f"epjax ÷ torch ({TORCH_DEFAULT_THREADS} threads)",
            "epjax compile",
            "repeats epjax / torch 1 / torch default",
            "EP estimate: epjax / torch",
        ],
        rows,
    )
    parts = table(
        [
            "family",
            "sample: epjax",
            "sample: torch (1 thr.)",
            "epjax ÷ torch (1 thr.)",
            f"sample: torch ({TORCH_DEFAULT_THREADS} thr.)",
            "score reversed: epjax",
            "score: torch (1 thr.)",
            "epjax ÷ torch (1 thr.)",
            f"score: torch ({TORCH_DEFAULT_THREADS} thr.)",
            "epjax compile sample / score",
        ],
        part_rows,
    )
    return main, parts


# ---------------------------------------------------------------------------------------------------- (b)


def bench_scaling(s: Sizes, min_repeats: int, summary: list[dict]) -> str:
    rows = []
    Ts = list(s.scaling_T)
    for family in s.families:
        model = make_model(family, s, max(Ts))
        params = model.init(jax.random.key(0))
        peer = make_peer(family, model, params)
        epjax_times, torch_times, cells = [], [], []
        for T in Ts:
            _, score = epjax_parts(model, T)
            x = jax.random.randint(jax.random.key(T), (s.scaling_batch, T), 0, s.vocab, jnp.int32)
            run, _ = aot(model, score, params, x)
            xt = torch.from_numpy(np.array(x)).long()
            warm_x = xt[:1, : min(T, 8)]
            te, tt = measure(
                [
                    Job(run, lambda: None),
                    Job(
                        torch_call(partial(peer.score_reversed, xt), 1),
                        torch_call(partial(peer.log_probs, warm_x), 1),
                    ),
                ],
                budget_s=s.budget_s / 8,
                min_repeats=min_repeats,
                **ROUNDS,
            )
            epjax_times.append(te)
            torch_times.append(tt)
            cells.append(f"{fmt_time(te.median)} / {fmt_time(tt.median)}")
            log(f"  scaling {family} T={T}: epjax {fmt_timing(te)}, torch (1 thread) {fmt_timing(tt)}")
        k_e = fit_exponent(Ts, [t.median for t in epjax_times])
        k_b = fit_exponent(Ts, [t.best for t in epjax_times])
        k_t = fit_exponent(Ts, [t.median for t in torch_times])
        k_tb = fit_exponent(Ts, [t.best for t in torch_times])
        rows.append([family, *cells, f"**{k_e:.2f}** ({k_b:.2f})", f"{k_t:.2f} ({k_tb:.2f})"])
        summary.append(summary_row(
            "neural", family, "scoring: scaling in T", f"{describe_model(family, model)}, B = {s.scaling_batch}, "
            f"T = {Ts[0]} … {Ts[-1]} (times at the largest T)", epjax_times[-1], "torch (1 thread)", torch_times[-1],
            note=f"time ~ T^k: epjax k = {k_e:.2f} ({k_b:.2f} best), torch k = {k_t:.2f}",
            scaling={"x": "T", "values": Ts, "median_s": [t.median for t in epjax_times], "k": k_e, "k_best": k_b,
                     "peer_median_s": [t.median for t in torch_times], "peer_k": k_t}))
    return table(
        [
            "family",
            *(f"T = {T}: epjax / torch" for T in Ts),
            "epjax exponent k: medians (best)",
            "torch exponent k: medians (best)",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- profile

PROFILED = ("lstm",)  # families whose rows miss their target in recent runs: a profile of their scoring


def _lstm_recurrence(U, gx):
    """One LSTM layer's sequential part in plain JAX: ``z_t = gx_t + h_{t-1} U``, the gates, ``[T, B, H]``."""
    B, H = gx.shape[1], U.shape[0]

    def step(carry, g):
        h, c = carry
        i, f, u, o = jnp.split(g + h @ U, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zero = jnp.zeros((B, H), gx.dtype)
    return jax.lax.scan(step, (zero, zero), gx)[1]


def profile_lstm(s: Sizes, min_repeats: int) -> str:
    """Where an LSTM's scoring time goes, epjax against PyTorch: the whole pass, then plain-JAX and PyTorch
    stand-ins for its parts at the same shapes (the recurrence, the input projections, the head), and XLA's view
    of the compiled pass (FLOPs, fusions, loops)."""
    family, T, B = "lstm", s.T, s.batch
    model = make_model(family, s, T)
    params = model.init(jax.random.key(0))
    peer = make_peer(family, model, params)
    c = model.config
    H, V, L = c.hidden_size, c.vocab_size, c.num_layers
    x = jax.random.randint(jax.random.key(1), (B, T), 0, V, jnp.int32)
    _, score = epjax_parts(model, T)
    run_score, _ = aot(model, score, params, x)
    k = iter(jax.random.split(jax.random.key(2), 5))
    hs = jax.random.normal(next(k), (B, T, H))
    W = 0.05 * jax.random.normal(next(k), (H, V))
    U = 0.05 * jax.random.normal(next(k), (H, 4 * H))
    Wi = 0.05 * jax.random.normal(next(k), (H, 4 * H))
    gx = jax.random.normal(next(k), (T, B, 4 * H))
    head = jax.jit(lambda h, W, x: jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(h @ W), x[..., None], -1)))
    rec = jax.jit(_lstm_recurrence)
    inproj = jax.jit(lambda h, Wi: h @ Wi)
    xt = torch.from_numpy(np.array(x)).long()
    ht = torch.from_numpy(np.array(hs))
    head_w = torch.from_numpy(np.array(W.T)).contiguous()

    def torch_head():
        log_p = torch.log_softmax(torch.nn.functional.linear(ht, head_w), -1)
        return log_p.gather(-1, xt[..., None]).sum()

    def torch_rnn():
        return peer.rnn(ht)[0]

    nd = TORCH_DEFAULT_THREADS
    jobs = [
        Job(run_score, lambda: None),
        partial(rec, U, gx),
        partial(inproj, hs, Wi),
        partial(head, hs, W, x),
        torch_call(partial(peer.score_reversed, xt), 1),
        torch_call(torch_rnn, 1),
        torch_call(torch_head, 1),
        torch_call(partial(peer.score_reversed, xt), nd),
        torch_call(torch_rnn, nd),
        torch_call(torch_head, nd),
    ]
    log("  profile lstm ...")
    t = measure(jobs, budget_s=s.budget_s, min_repeats=min_repeats, **ROUNDS)
    hlo = run_score.func.as_text()
    flops, rec_flops = rnn_flops(c, T, B)
    xla = xla_count(run_score)
    rows = [
        ["whole scoring pass (`vmap(log_probs)`, reversed)", fmt_timing(t[0]), fmt_timing(t[4]), fmt_timing(t[7]),
         f"{flops / t[0].median / 1e9:.2f} GFLOP/s"],
        [f"recurrence, {L} layers (JAX: `lax.scan` of `h U` + gates, one layer × {L}; torch: `nn.LSTM` on [B, T, H], "
         "input projections included)", f"{fmt_time(L * t[1].median)} (+ {fmt_time(L * t[2].median)} input "
         "projections)", fmt_timing(t[5]), fmt_timing(t[8]),
         f"{rec_flops / (L * t[1].median) / 1e9:.2f} GFLOP/s (recurrent products only)"],
        ["head + log-softmax + gather ([B T, H] × [H, V])", fmt_timing(t[3]), fmt_timing(t[6]), fmt_timing(t[9]),
         f"{2 * B * T * H * V / t[3].median / 1e9:.2f} GFLOP/s"],
    ]
    tab = table(["part", "epjax / plain JAX", "torch (1 thread)", f"torch ({nd} threads)", "achieved (JAX side)"], rows)
    return (
        f"### Profile: LSTM scoring against PyTorch\n\nLSTM L={L} H={H}, V = {V}, B = {B}, T = {T}, float32. The "
        "parts are stand-ins at the same shapes (random weights), timed in the same rounds as the whole pass; "
        "they show where the time goes, not a second measurement of epjax. XLA's view of the compiled pass: "
        f"analytic {flops:.3g} FLOPs, of which {rec_flops:.3g} in the sequential recurrent products; XLA's count "
        f"{xla:.3g} (loop bodies once); {hlo.count(' fusion(')} fusions and {hlo.count(' while(')} while loops in "
        "the module. How to read it: the recurrence is a chain of T dependent [B, H] × [H, 4H] products (B = "
        f"{B}: {2 * B * H * 4 * H / 1e6:.2f} MFLOP each) with the gates' elementwise work between them; where its "
        "stand-in takes most of the whole pass, that chain is the bottleneck and neither a faster head nor more "
        "threads shorten it much (PyTorch's `nn.LSTM` runs the same chain in its own C++ loop). XLA "
        "single-threaded: `neural.py --jax-threads 1 --families lstm` (a separate process; not run here).\n\n" + tab
    )


# ---------------------------------------------------------------------------------------------------- report


def compiler_note(s: Sizes) -> str:
    """The XLA options epjax compiles each family with."""
    return "XLA compiler options of epjax's computations (`epjax.compiler_options(model)`): " + "; ".join(
        f"{f} `{epjax.compiler_options(make_model(f, s, s.T)) or 'none (XLA defaults)'}`" for f in s.families
    )


def threads_note() -> str:
    xla_flags = os.environ.get("XLA_FLAGS", "")
    jax_threads = (
        "1 (`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`)"
        if "xla_cpu_multi_thread_eigen=false" in xla_flags
        else f"XLA's default intra-op pool (all {os.cpu_count()} cores; `XLA_FLAGS` = `{xla_flags or 'unset'}`)"
    )
    return (
        f"threads: JAX {jax_threads}; PyTorch timed at its default `torch.get_num_threads()` = "
        f"{TORCH_DEFAULT_THREADS} and at `torch.set_num_threads(1)`, eager, `torch.inference_mode()`, "
        f"`OMP_WAIT_POLICY` = `{os.environ.get('OMP_WAIT_POLICY', 'unset')}`"
    )


AGREE_TEXT = """
The same parameters on both sides (the peer is built from epjax's parameter state). "scoring": max over
steps of |Δ log p(x_t | x_<t)| between ``model.log_probs`` and the peer's parallel pass, on epjax samples
and on their reversals; "sampler's log-probs": the peer samples with its step function and its per-step
log-probabilities are compared with epjax's score of those tokens (this checks the peer's sampling path,
including the Transformer's key/value cache and the SSM recurrences). The run stops unless the float64
differences are below {tol:.0e}; the float32 columns are the benchmark models, for information.
"""
MC_TEXT = """
One Monte Carlo EP estimate of B trajectories of T tokens. epjax: the public call
``epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)`` (validation,
one jitted vmapped batch of sample-with-log-probs + scoring of the reversed sequence, host-side summary;
its warm-up call compiles). PyTorch: the same work as a plain program, sampling with log-probs in a Python
loop of T steps over the batch, then one parallel scoring pass of the reversed batch; its time is the
sampling call plus the scoring call of the same round (they are timed separately for the table below), and
its warm-up is a small run through the same code. traj/s = B / time, tokens/s = B T / time (each token is
sampled once and scored once). "compile" is epjax's first call minus its median. The last column checks
that both compute the same quantity: mean ± stderr of sigma over the B trajectories of one call (different
random streams; the PyTorch one from a 1-thread round), z = difference / combined stderr.
"""
PARTS_TEXT = """
The two halves on their own, same B and T, timed in the same rounds as the table above: "sample" is the
batched ancestral sampling with forward log-probabilities (epjax: ``jax.vmap(model.sample_with_log_probs)``,
jitted), "score reversed" the log-likelihood of the B reversed samples (epjax: ``jax.vmap(model.log_probs)``
of ``reverse_tokens(x)``, summed, jitted); both compiled ahead of time
(``jit(..., compiler_options=epjax.compiler_options(model)).lower(...).compile()``, the options epjax's own
entry points use for the model; last column). epjax on CPU: RNN and Mamba layers score with ``lax.scan``
over time, input projections hoisted out of the loop (``ssm.Config.scan_chunk = None`` picks the
sequential scan on CPU), S4D in its convolution form (impulse response and FFT, like the PyTorch peer);
the Transformer scores with one causal pass and samples with a key/value cache grown in four windows of
T/4 steps, each step attending to all slots of its window under a mask (the PyTorch decoder slices the
filled ones). The peers' methods are in the docstring of ``benchmarks/torch_peers.py``.
"""
SCALING_TEXT = """
Scoring alone against T: B = {B} random token sequences of each length, ``jax.vmap(log_probs)`` of the
reversed sequences (jitted, compiled ahead of time for every T) vs the peer's scoring pass at 1 thread; each
cell is "epjax / torch" median. The exponent k is the least-squares slope of log(time) on log(T) over
T = {Ts}, from the medians (from the best times in parentheses). A per-token cost gives k ≈ 1. Attention's
T² term dominates only once it outweighs the per-token matrix products: per token and layer, QKᵀ and the
weighted sum of values cost about 2 T D multiply-adds when the whole T × T square is computed under a mask
and materialised (epjax's ``_causal_attention``), against 12 D² for the projections and the MLP (width D),
so the flop counts cross at T ≈ 6 D = {cross}; the softmax over the T × T scores (exp, memory traffic)
brings the crossing earlier on a CPU. PyTorch's CPU ``scaled_dot_product_attention(is_causal=True)`` is a
fused flash-attention kernel that skips the key blocks above the diagonal (half the work, no T × T array).
A Transformer's k therefore lies between 1 and 2 at these lengths. S4D's PyTorch scoring is an FFT
convolution (O(T log T)). The Transformer sweep uses a model with context length {ctx} (the positions
beyond T are unused by the timed calls).
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (a minute or two)")
    add_out_option(parser)
    add_summary_option(parser)
    parser.add_argument(
        "--families",
        default=None,
        help="comma-separated subset of gru,lstm,elman,transformer,s4d,mamba (default: all)",
    )
    parser.add_argument(
        "--jax-threads",
        choices=["default", "1"],
        default="default",
        help="1: run XLA single-threaded (sets XLA_FLAGS before jax is imported)",
    )
    parser.add_argument("--skip-scaling", action="store_true", help="omit part (b)")
    parser.add_argument("--skip-profile", action="store_true", help="omit the profile of the LSTM's scoring")
    parser.add_argument(
        "--repeats", type=int, default=None, help="least number of timed rounds per model (default 3; 2 full)"
    )
    parser.add_argument(
        "--torch-default-repeats",
        type=int,
        default=None,
        help="cap the timed rounds of PyTorch at its default thread count (on a busy machine its OpenMP "
        "threads can wait on each other for minutes; default: no cap)",
    )
    args = parser.parse_args(argv[1:])
    sizes = QUICK if args.quick else FULL
    if args.families:
        chosen = tuple(f.strip() for f in args.families.split(","))
        unknown = sorted(set(chosen) - set(FULL.families))
        if unknown:
            parser.error(f"unknown families {unknown}; choose from {FULL.families}")
        sizes = dataclasses.replace(sizes, families=chosen)

    start = time.perf_counter()
    head = header(
        "neural.py",
        argv,
        peers=[flax, torch],
        notes=[
            compiler_note(sizes),
            threads_note(),
            f"sizes: vocabulary {sizes.vocab}, width {sizes.width}, {sizes.layers} layers, T = {sizes.T}, batch "
            f"{sizes.batch} (one compiled batch: `batch_size = num_samples`); float32 for the timings, float64 for "
            "the check",
            'times are "median (best)" over repeats after a warm-up call; the peers of one row are timed in '
            "alternation (round-robin); ratios > 1 mean epjax is faster",
        ],
    )
    log("checking agreement ...")
    agree = check_agreement(sizes)
    log("(a) Monte Carlo EP ...")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 2)
    summary: list[dict] = []
    mc, parts = bench_monte_carlo(sizes, repeats, args.torch_default_repeats, summary)
    sections = [
        head,
        "### Agreement check: per-step log-probabilities, epjax vs the PyTorch peers\n\n"
        + prose(AGREE_TEXT.format(tol=F64_TOL))
        + "\n\n"
        + agree,
        f"### (a) Monte Carlo EP throughput (T = {sizes.T}, B = {sizes.batch})\n\n"
        + prose(MC_TEXT)
        + "\n\n"
        + mc,
        "#### Sampling and scoring on their own\n\n" + prose(PARTS_TEXT) + "\n\n" + parts,
    ]
    if not args.skip_scaling:
        log("(b) scoring cost against T ...")
        scaling = bench_scaling(sizes, 3, summary)
        sections.append(
            "### (b) Scoring cost against T\n\n"
            + prose(
                SCALING_TEXT.format(
                    B=sizes.scaling_batch,
                    Ts=", ".join(map(str, sizes.scaling_T)),
                    ctx=max(sizes.scaling_T),
                    cross=6 * sizes.width,
                )
            )
            + "\n\n"
            + scaling
        )
    for family in PROFILED:
        if family in sizes.families and not args.skip_profile:
            sections.append(profile_lstm(sizes, 3))
    sections.append(footer(start))
    publish("\n\n".join(sections), out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)

if __name__ == "__main__":
    main()
