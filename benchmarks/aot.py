"""Training throughput of a forward/backward (FW/BW) pair of models, epjax against the same training in PyTorch.

The arrow-of-time learnability gap (docs/mathematics.md §8) trains two twins of one architecture, one on the
training sequences and one on the same sequences token-reversed, drawing the same rows at every step. epjax
trains the pair with the public call ``epjax.train.train_many(keys, model, params, data, config=...)``: one
jitted optimiser step for both models (its default strategy: ``lax.map`` over the models on CPU, ``vmap`` on
accelerators) (``data = stack([rows, rows[:, ::-1]])``, ``keys = stack([k,
k])``, the parameters stacked twice). The peer is the same training written in eager PyTorch the way a user
would write it: two models (``benchmarks/torch_peers.py``'s ``TorchRNN`` / ``TorchGPT``, built from the *same*
initial parameters), two ``torch.optim.AdamW`` with a warm-up + cosine ``LambdaLR`` and
``clip_grad_norm_``, one optimiser step per model per iteration on the same batch rows (reversed for BW).

Before timing, a short run checks that both sides compute the same training: the PyTorch loop is fed the
batch rows epjax draws (the key sequence of ``train_many`` replayed with ``jax.random``) and the per-step
losses of both models are compared with epjax's ``History.train_loss`` (float32).

``train_many`` compiles its step once per model, settings and data size and reuses it in later calls. Its
steady-state time is the call's wall time minus the compilation JAX reports for that call (``jax.monitoring``
duration events ``/jax/core/compile/*``: tracing, lowering, XLA compilation); that compile time, and the whole
call's throughput, are reported beside it.
PyTorch is timed at its default ``torch.get_num_threads()`` and at ``torch.set_num_threads(1)``, the three
jobs in alternation (round-robin, ``harness.measure_rounds``).

    python benchmarks/aot.py                 # full run: 200 steps per timing, appends to RESULTS.md
    python benchmarks/aot.py --quick         # smoke run (a few steps), prints only
    python benchmarks/aot.py --repeats 3 --families gru,transformer
    python benchmarks/aot.py --summary-json rows.json   # also the summary rows of benchmarks/run.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from harness import (
    Job,
    Timing,
    add_out_option,
    add_summary_option,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    fmt_timing,
    footer,
    header,
    log,
    measure_rounds,
    prose,
    publish,
    summary_row,
    table,
    write_summary,
)

from epjax import families, train

try:
    import torch
    import torch.nn.functional as F
    from torch_peers import DEFAULT_THREADS as TORCH_DEFAULT_THREADS
    from torch_peers import make_peer, trainable_parameters
except ImportError as err:  # the peer is a benchmark-only dependency (torch is in the [test] extra)
    raise SystemExit(f"benchmarks/aot.py needs torch (pip install torch): {err}") from err

FAMILIES = ("gru", "lstm", "transformer")


@dataclasses.dataclass(frozen=True)
class Sizes:
    vocab: int
    T: int  # sequence length
    batch: int  # rows per step and model
    rows: int  # training sequences
    steps: int  # optimiser steps per timed call
    check_steps: int  # steps of the agreement check
    repeats: int


FULL = Sizes(vocab=64, T=32, batch=128, rows=1024, steps=200, check_steps=30, repeats=5)
QUICK = Sizes(vocab=12, T=16, batch=16, rows=64, steps=5, check_steps=4, repeats=1)
CHECK_TOL = 1e-3  # float32 on both sides; max |Δ loss| in nats per token over the check's steps


def make_model(family: str, s: Sizes):
    if family == "transformer":
        return families.new_model("transformer", s.vocab, size="small", context_length=s.T)
    return families.new_model("rnn", s.vocab, size="small", cell=family)


def describe_model(family: str, model) -> str:
    c = model.config
    if family == "transformer":
        return f"GPT L={c.num_layers} D={c.embed_size} heads={c.num_heads} MLP {c.mlp_ratio}D"
    return f"{family.upper()} L={c.num_layers} H={c.hidden_size}"


def num_parameters(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


# ---------------------------------------------------------------------------------------------------- epjax


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling (its ``/jax/core/compile/*`` duration events)."""

    def __init__(self):
        self.total = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            self.total += duration


def epjax_pair(model, params, rows: np.ndarray, key, config: train.TrainConfig):
    """``train_many`` of the FW/BW pair, as the arrow-of-time experiment calls it."""
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), params)
    data = np.stack([rows, rows[:, ::-1]])
    keys = jnp.stack([key, key])
    return train.train_many(keys, model, stacked, data, config=config)


def drawn_rows(key, config: train.TrainConfig, num_rows: int) -> np.ndarray:
    """``[steps, batch]`` rows ``train_many`` draws with ``key`` (``key, sub = split(key)`` then
    ``randint(sub, (batch,), 0, num_rows)`` each step, as ``epjax.train.train`` documents)."""
    out = []
    for _ in range(config.steps):
        key, sub = jax.random.split(key)
        out.append(np.asarray(jax.random.randint(sub, (config.batch_size,), 0, num_rows)))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------------- PyTorch


def warmup_cosine(config: train.TrainConfig) -> Callable[[int], float]:
    """The factor of the peak learning rate at step ``count`` (``optax.warmup_cosine_decay_schedule``'s
    law, as epjax.train.optimizer configures it), for ``torch.optim.lr_scheduler.LambdaLR``."""
    warm = config.warmup_steps
    decay = max(config.steps, warm + 1) - warm
    alpha = config.final_lr_fraction

    def factor(count: int) -> float:
        if count < warm:
            return count / warm
        progress = min(count - warm, decay) / decay
        return alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@contextlib.contextmanager
def torch_threads(threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchPair:
    """FW and BW PyTorch models from epjax's initial parameters, each with its AdamW, schedule and clipping."""

    def __init__(self, family: str, model, params, rows: np.ndarray, config: train.TrainConfig):
        self.config = config
        forward = torch.from_numpy(np.ascontiguousarray(rows)).long()
        self.members = []
        for data in (forward, forward.flip(1).contiguous()):
            peer = make_peer(family, model, params)
            weights = trainable_parameters(peer)
            opt = torch.optim.AdamW(
                weights, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay
            )
            sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(config))
            self.members.append((peer, weights, opt, sched, data))

    def step(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """One optimiser step of each model on rows ``idx``; the losses before the updates."""
        losses = []
        for peer, weights, opt, sched, data in self.members:
            x = data[idx]
            logits = peer.logits(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(weights, self.config.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.detach())
        return losses


def torch_pair_run(family, model, params, rows, config, threads: int, seed: int = 0) -> None:
    """A whole PyTorch training of the pair: build both models and optimisers, ``config.steps`` steps, rows
    drawn with ``torch.randint`` (the same rows for both)."""
    with torch_threads(threads):
        pair = TorchPair(family, model, params, rows, config)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(config.steps):
            pair.step(torch.randint(len(rows), (config.batch_size,), generator=gen))


# ---------------------------------------------------------------------------------------------------- benchmark


def check_agreement(family, model, params, rows, s: Sizes) -> tuple[float, float]:
    """Max |Δ loss| over both models and the check's steps, epjax vs PyTorch fed epjax's rows; and the spread
    (max - min) of epjax's losses, for scale."""
    config = train.TrainConfig(steps=s.check_steps, batch_size=s.batch, warmup_steps=max(s.check_steps // 3, 1))
    key = jax.random.key(7)
    _, history = epjax_pair(model, params, rows, key, config)
    ours = history.train_loss  # [2, steps]
    pair = TorchPair(family, model, params, rows, config)
    theirs = np.array(
        [[float(x) for x in pair.step(torch.from_numpy(i).long())] for i in drawn_rows(key, config, len(rows))]
    ).T
    return float(np.max(np.abs(ours - theirs))), float(ours.max() - ours.min())


def run_epjax(clock: CompileClock, compiles: list[float], model, params, rows, config) -> None:
    """One public ``train_many`` call of the pair; appends the seconds JAX spent compiling in it."""
    before = clock.total
    out, _ = epjax_pair(model, params, rows, jax.random.key(1), config)
    jax.block_until_ready(out)
    compiles.append(clock.total - before)


def per_step(times: list[float], steps: int, first: float = 0.0) -> Timing:
    """Seconds per step (both models) of calls of ``steps`` steps."""
    return Timing.of([t / steps for t in times], first)


def bench(s: Sizes, chosen: tuple[str, ...], repeats: int, default_steps: int,
          summary: list[dict]) -> tuple[str, list[str]]:
    """The table, and a line per family with the headline ratios. ``default_steps``: steps of each call of
    PyTorch at its default thread count (fewer than ``s.steps`` on a busy machine, where they can be slow)."""
    clock = CompileClock()
    rng = np.random.default_rng(0)
    rows_out, verdicts = [], []
    step_tokens = 2 * s.batch * s.T
    config = train.TrainConfig(steps=s.steps, batch_size=s.batch)
    config_n = dataclasses.replace(config, steps=default_steps)
    small = dataclasses.replace(config, steps=2)  # PyTorch's warm-up: a short run through the same code
    for family in chosen:
        model = make_model(family, s)
        params = model.init(jax.random.key(0))
        rows = rng.integers(0, s.vocab, (s.rows, s.T)).astype(np.int32)
        log(f"  {family}: agreement check ...")
        delta, spread = check_agreement(family, model, params, rows, s)
        log(f"  {family}: max |Δ loss| {delta:.1e} (losses spread {spread:.2f})")
        if not delta < CHECK_TOL:
            raise SystemExit(
                f"epjax and the PyTorch training of {family} disagree: max |Δ loss| = {delta:.2e} over "
                f"{s.check_steps} steps (tolerance {CHECK_TOL:.0e})"
            )

        compiles: list[float] = []
        run = functools.partial(torch_pair_run, family, model, params, rows)
        jobs = [
            # epjax's warm-up is a full call (its compilation is recorded like the timed calls')
            Job(functools.partial(run_epjax, clock, compiles, model, params, rows, config)),
            Job(
                functools.partial(run, config_n, TORCH_DEFAULT_THREADS),
                functools.partial(run, small, TORCH_DEFAULT_THREADS),
            ),
            Job(functools.partial(run, config, 1), functools.partial(run, small, 1)),
        ]
        log(f"  {family}: timing {repeats} rounds ...")
        firsts, times = measure_rounds(jobs, budget_s=0.0, min_repeats=repeats, max_repeats=repeats, slow_first_s=None)
        timed_compiles = compiles[1:]
        steady = per_step([w - c for w, c in zip(times[0], timed_compiles, strict=True)], s.steps)
        whole = per_step(times[0], s.steps)
        tn, t1 = per_step(times[1], default_steps), per_step(times[2], s.steps)
        rate = lambda t: f"{fmt_rate(step_tokens / t.median)} ({fmt_rate(step_tokens / t.best)})"  # noqa: E731
        rows_out.append(
            [
                describe_model(family, model),
                f"{num_parameters(params):,}",
                fmt_timing(steady),
                rate(steady),
                fmt_timing(tn),
                rate(tn),
                f"**{fmt_ratio(tn, steady)}**",
                fmt_timing(t1),
                rate(t1),
                f"**{fmt_ratio(t1, steady)}**",
                f"{fmt_time(statistics.median(timed_compiles))} "
                f"({fmt_time(min(timed_compiles))}–{fmt_time(max(timed_compiles))})",
                rate(whole),
                f"{fmt_ratio(tn, whole)} / {fmt_ratio(t1, whole)}",
                f"{delta:.1e}",
            ]
        )
        size = f"{describe_model(family, model)}, T = {s.T}, B = {s.batch}, per optimiser step of the pair"
        for peer_name, t in ((f"torch ({TORCH_DEFAULT_THREADS} threads)", tn), ("torch (1 thread)", t1)):
            summary.append(summary_row(
                "aot", family, "FW/BW pair training (train_many)", size, steady, peer_name, t, compile_s=compiles[0],
                units=step_tokens, unit="tokens", note=f"steady state (call minus its compilation); whole call "
                f"{t.median / whole.median:.2f}× the peer"))
        verdicts.append(
            f"{family} {tn.median / steady.median:.2f}× / {t1.median / steady.median:.2f}× "
            f"(whole call {tn.median / whole.median:.2f}× / {t1.median / whole.median:.2f}×)"
        )
        log(
            f"  {family}: per step: epjax steady {fmt_timing(steady)} (compile per call "
            f"{fmt_time(statistics.median(timed_compiles))}), torch {TORCH_DEFAULT_THREADS} threads "
            f"{fmt_timing(tn)}, torch 1 thread {fmt_timing(t1)}"
        )
    n = TORCH_DEFAULT_THREADS
    head = [
        "model (each of the pair)",
        "parameters (each)",
        f"epjax steady state: per step ({s.steps} steps a call)",
        "epjax tokens/s",
        f"torch ({n} threads, default): per step ({default_steps} steps a call)",
        f"torch ({n} threads) tokens/s",
        f"epjax ÷ torch ({n} threads)",
        f"torch (1 thread): per step ({s.steps} steps a call)",
        "torch (1 thread) tokens/s",
        "epjax ÷ torch (1 thread)",
        "epjax compile per call: median (range)",
        "epjax whole call (compile included) tokens/s",
        f"whole call ÷ torch ({n} threads) / (1 thread)",
        "check: largest loss difference (nats)",
    ]
    return table(head, rows_out), verdicts


TEXT = """
Each timed call is a whole training of the FW/BW pair for {steps} optimiser steps (PyTorch at its default
thread count: {default_steps}) of B = {B} sequences of T = {T} random tokens (vocabulary {V}, {N} training
rows drawn uniformly with replacement, the same rows for both models, reversed for BW), from the same initial
parameters on both sides, float32, AdamW (learning rate {lr}, weight decay {wd}, {warm} warm-up steps then
cosine decay to {final} of the peak, global-norm clipping at {clip}). Times are per optimiser step of the
pair (a call's time / its steps), "median (best)" over the rounds; tokens/s = 2 models × B × T / time per
step, from the median (from the fastest round). epjax: ``epjax.train.train_many`` (one compiled step for
both models, ``lax.map`` over them on CPU, a Python loop over steps); "steady state" is each call's wall time minus
the compilation JAX
reports for it (the ``jax.monitoring`` events ``/jax/core/compile/*``: tracing, lowering and XLA
compilation; the step is compiled by the first call and cached, so later calls report almost none), divided by
its steps; host-side
validation and dispatch stay in. "whole call" is the call as a user pays it, compilation included. PyTorch:
eager, two ``TorchRNN`` / ``TorchGPT`` peers (benchmarks/torch_peers.py: ``torch.nn.GRU`` / ``LSTM``, a
handwritten GPT with ``scaled_dot_product_attention(is_causal=True)``) trained by ``F.cross_entropy``,
``backward()``, ``clip_grad_norm_``, ``torch.optim.AdamW`` (default implementation) and a ``LambdaLR``
warm-up + cosine schedule, one optimiser step per model per iteration, rows from ``torch.randint``; a call
builds both models and optimisers and runs all its steps. The three jobs of a row are timed in alternation
(round-robin) after a warm-up call each (epjax: a full call; PyTorch: 2 steps). "check": before timing,
{check} steps of both trainings on the same rows (PyTorch fed the rows epjax draws), max over both models and
all steps of the difference of the per-step losses (nats per token); the run stops above {tol:.0e}. Ratios
> 1 mean epjax is faster.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps: a smoke run")
    add_out_option(parser)
    add_summary_option(parser)
    parser.add_argument("--families", default=None, help=f"comma-separated subset of {','.join(FAMILIES)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per model (default 5; 1 quick)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per timed call (default 200)")
    parser.add_argument(
        "--torch-default-steps",
        type=int,
        default=None,
        help="steps per call of PyTorch at its default thread count (default: --steps). On a busy machine its "
        "OpenMP threads can wait on each other for seconds a step; its per-step figures stay comparable",
    )
    args = parser.parse_args(argv[1:])
    sizes = QUICK if args.quick else FULL
    if args.steps is not None:
        sizes = dataclasses.replace(sizes, steps=args.steps)
    chosen = FAMILIES
    if args.families:
        chosen = tuple(f.strip() for f in args.families.split(","))
        unknown = sorted(set(chosen) - set(FAMILIES))
        if unknown:
            parser.error(f"unknown families {unknown}; choose from {FAMILIES}")
    repeats = args.repeats if args.repeats is not None else sizes.repeats
    default_steps = args.torch_default_steps if args.torch_default_steps is not None else sizes.steps

    start = time.perf_counter()
    config = train.TrainConfig(steps=sizes.steps, batch_size=sizes.batch)
    head = header(
        "aot.py",
        argv,
        peers=[optax, torch],
        device=f"torch default threads {TORCH_DEFAULT_THREADS}",
        notes=[
            f"sizes: vocabulary {sizes.vocab}, T = {sizes.T}, batch {sizes.batch} per model, {sizes.steps} steps "
            f"per timed call ({default_steps} for PyTorch at its default threads), {repeats} timed rounds; "
            '`families.new_model(..., size="small")`; float32',
            "threads: JAX on XLA's default intra-op pool (all cores); PyTorch at its default thread count and at 1",
            'times are "median (best)"; ratios > 1 mean epjax is faster',
        ],
    )
    log("FW/BW pair training ...")
    summary: list[dict] = []
    tab, verdicts = bench(sizes, chosen, repeats, default_steps, summary)
    text = prose(
        TEXT.format(
            steps=sizes.steps,
            default_steps=default_steps,
            B=sizes.batch,
            T=sizes.T,
            V=sizes.vocab,
            N=sizes.rows,
            lr=config.learning_rate,
            wd=config.weight_decay,
            warm=config.warmup_steps,
            final=config.final_lr_fraction,
            clip=config.grad_clip,
            check=sizes.check_steps,
            tol=CHECK_TOL,
        )
    )
    section = "\n\n".join(
        [
            head,
            f"### Training throughput of a FW/BW pair (T = {sizes.T}, B = {sizes.batch})\n\n{text}\n\n{tab}",
            f"epjax ÷ torch ({TORCH_DEFAULT_THREADS} threads) / (1 thread), tokens/s from the medians, steady "
            "state (whole call): " + "; ".join(verdicts) + ".",
            footer(start),
        ]
    )
    publish(section, out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main()
