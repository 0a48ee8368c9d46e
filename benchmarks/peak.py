"""The distance to the limit: this machine's matmul peak, and the FLOP counts of the benchmarked computations.

Run as a script, it measures the peak: a large square ``jnp.dot`` (jitted, blocking on the result) and numpy's
BLAS ``a @ b``, float32 and float64, timed in alternation; FLOP = 2 n³ a product. The highest rate in
a fastest round, over both and all n, is "the measured matmul peak" that benchmarks/run.py divides
achieved FLOP/s by.

As a module, it holds the FLOP counts of one forward (scoring) pass that the other scripts report as achieved
FLOP/s. Counts are multiply-adds × 2 of the matrix products; elementwise work (softmax, norms, activations,
residual adds) is left out, since it is a few per element against hundreds or thousands per element for the
products. Each count is cross-checked against XLA's own ``jax.jit(f).lower(...).compile().cost_analysis()``
(:func:`xla_flops`), which counts every elementwise op as well and counts the body of a loop (``lax.scan``,
``while``) once, whatever its trip count; :func:`xla_per_step` undoes that for scans over time.

    python benchmarks/peak.py            # full run (n = 2048 and 4096), appends a section to RESULTS.md
    python benchmarks/peak.py --quick    # n = 512 and 1024, prints only
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from harness import (
    Job,
    Timing,
    add_out_option,
    add_summary_option,
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

# ---------------------------------------------------------------------------------------------------- FLOP counts


def transformer_flops(config, T: int, batch: int = 1) -> float:
    """FLOPs of ``epjax.transformer`` scoring ``batch`` sequences of ``T`` tokens (one causal pass).

    Per layer and sequence, with width D, MLP ratio r and the whole T × T square of scores computed under a
    mask (epjax's ``causal_attention``): QKV projection 2·T·D·3D, output projection 2·T·D², MLP 2·2·T·D·rD,
    scores q kᵀ 2·T²·D and weighted values 2·T²·D; the head 2·T·D·V. In all::

        batch · [L (8 T D² + 4 r T D² + 4 T² D) + 2 T D V]
    """
    L, D, r, V = config.num_layers, config.embed_size, config.mlp_ratio, config.vocab_size
    return float(batch * (L * (8 * T * D**2 + 4 * r * T * D**2 + 4 * T**2 * D) + 2 * T * D * V))


def llama_flops(config, T: int, batch: int = 1) -> float:
    """FLOPs of ``epjax.llama`` (SmolLM2, llama-like) scoring ``batch`` sequences of ``T`` tokens.

    Per layer and sequence, with H query heads and G key/value heads of size K (grouped-query attention),
    width D, SwiGLU hidden width F: projections q 2·T·D·HK, k and v 2·2·T·D·GK, output 2·T·HK·D; the whole
    T × T square of scores 2·T²·HK and weighted values 2·T²·HK; MLP (gate, up, down) 3·2·T·D·F; the (tied)
    head 2·T·D·V. In all::

        batch · [L (4 T D H K + 4 T D G K + 4 T² H K + 6 T D F) + 2 T D V]
    """
    c = config
    L, D, H, G, K, F, V = c.num_layers, c.embed_size, c.num_heads, c.num_kv_heads, c.head_size, c.mlp_size, c.vocab_size
    per_layer = 4 * T * D * H * K + 4 * T * D * G * K + 4 * T**2 * H * K + 6 * T * D * F
    return float(batch * (L * per_layer + 2 * T * D * V))


RNN_GATES = {"elman": 1, "gru": 3, "lstm": 4}


def rnn_flops(config, T: int, batch: int = 1) -> tuple[float, float]:
    """FLOPs of ``epjax.rnn`` scoring ``batch`` sequences of ``T`` tokens: ``(total, recurrent part)``.

    Per token, layer l with input width in_l (the embedding for l = 0, H after) and g gates (Elman 1, GRU 3,
    LSTM 4): input projection 2·g·H·in_l (hoisted out of the time loop), recurrent projection 2·g·H·H (the
    sequential part); the head 2·H·V::

        batch · T · [Σ_l 2 g H (in_l + H) + 2 H V]
    """
    g, H, V = RNN_GATES[config.cell], config.hidden_size, config.vocab_size
    ins = [config.embed_size] + [H] * (config.num_layers - 1)
    recurrent = batch * T * config.num_layers * 2 * g * H * H
    total = batch * T * (sum(2 * g * H * i for i in ins) + 2 * H * V) + recurrent
    return float(total), float(recurrent)


def kalman_loglik_flops(n: int, n_y: int, T: int, batch: int = 1) -> float:
    """FLOPs of the steady-state innovation filter's log-likelihood (``epjax.kalman.log_probs``).

    Per step: ``e = y - C xhat`` 2·n_y·n, ``xhat' = A (xhat + K e)`` 2·n·n_y + 2·n², the whitening
    triangular solve of e n_y²: ``batch · T · (2 n² + 4 n n_y + n_y²)``. Matrix-vector work: O(n²) a step.
    """
    return float(batch * T * (2 * n * n + 4 * n * n_y + n_y * n_y))


def kalman_exact_flops(n: int, n_y: int, T: int) -> float:
    """FLOPs of the exact EP recursion (``kalman.entropy_production(method="recursive")``, stable A).

    Per step the n×n (and n×n_y) products of the deviation recursion (docs/mathematics.md §5):
    ``F dN`` 2n³, ``(F dN) G`` 2n²n_y, ``C dD`` 2n n_y², ``F dD`` 2n²n_y, ``C dRho`` 2n²n_y,
    ``FDG (F dD)ᵀ`` 2n²n_y, ``F dRho Fᵀ`` 4n³, ``(F dD)(F dD)ᵀ`` 2n²n_y, ``(F dN) A`` 2n³, ``C dN`` 2n²n_y,
    ``Mᵀ C dN`` 2n²n_y, ``(C dN)ᵀ C dN`` 2n²n_y, ``Aᵀ V A`` 4n³::

        T · (12 n³ + 16 n² n_y + 2 n n_y²)      (30 n³ a step when n_y = n)
    """
    return float(T * (12 * n**3 + 16 * n**2 * n_y + 2 * n * n_y**2))


def xla_flops(fn: Callable, *args) -> float:
    """XLA's count: ``jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]`` (loop bodies once)."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jaxlibs: one dict per computation
        cost = cost[0]
    return float(cost["flops"])


def xla_per_step(count: Callable[[int], float], T1: int, T2: int) -> tuple[float, float]:
    """``(per step, loop body)`` of a scan over time from XLA's counts at two lengths ``count(T)``.

    XLA counts a loop body once, so ``count(T) = T · hoisted + body``: the slope is the per-step work outside
    the loop (input projections, head, whitening), the intercept the body (one step of the recurrence, plus
    the set-up outside the loop). Per step in all ≈ slope + intercept.
    """
    a, b = count(T1), count(T2)
    slope = (b - a) / (T2 - T1)
    body = a - slope * T1
    return slope + body, body


def fit_exponent(xs: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope k of log(seconds) on log(x): time ~ x^k."""
    if len(xs) != len(seconds) or len(xs) < 2:
        raise ValueError(f"fit_exponent needs two or more (x, seconds) pairs, got {len(xs)} x and {len(seconds)}")
    if min(xs) <= 0 or min(seconds) <= 0:
        raise ValueError(f"fit_exponent needs positive x and seconds, got {list(xs)} and {list(seconds)}")
    return float(np.polyfit(np.log(xs), np.log(seconds), 1)[0])


# ---------------------------------------------------------------------------------------------------- the peak


def matmul_jobs(n: int, dtype) -> tuple[list[Job], Callable[[], float]]:
    """Jobs for ``jnp.dot`` (jitted) and numpy ``a @ b`` of two n×n ``dtype`` matrices, and a check of their
    agreement (max relative difference)."""
    rng = np.random.default_rng(n)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    dot(ja, jb).block_until_ready()  # compile outside the timings

    def check() -> float:
        ref = a @ b
        return float(np.max(np.abs(np.asarray(dot(ja, jb)) - ref)) / np.max(np.abs(ref)))

    return [Job(lambda: dot(ja, jb)), Job(lambda: a @ b)], check


def bench_peak(sizes: Sequence[int], dtypes: Sequence[str], min_repeats: int) -> tuple[list[list[str]], list[dict]]:
    rows, summary = [], []
    for dtype in dtypes:
        with jax.enable_x64(dtype == "float64"):
            for n in sizes:
                jobs, check = matmul_jobs(n, dtype)
                firsts, times = measure_rounds(jobs, budget_s=2.0, min_repeats=min_repeats, max_repeats=20,
                                               slow_first_s=None)
                tj, tn = (Timing.of(t, f) for t, f in zip(times, firsts, strict=True))
                flops = 2.0 * n**3
                rel = check()
                rate = lambda t, f=flops: f"{f / t.median / 1e9:.1f} ({f / t.best / 1e9:.1f})"  # noqa: E731
                rows.append([dtype, str(n), fmt_timing(tj), rate(tj), fmt_timing(tn), rate(tn), f"{rel:.1e}",
                             str(tj.repeats)])
                for name, t in (("jnp.dot (jit)", tj), ("numpy @ (BLAS)", tn)):
                    summary.append(summary_row(
                        "peak", "matmul", f"{dtype} {name}", f"n = {n}", t, flops=flops,
                        note=f"{flops / t.median / 1e9:.1f} GFLOP/s median", kind="peak", dtype=dtype, n=n,
                        peak_flops_per_s=flops / t.median, best_flops_per_s=flops / t.best))
                log(f"  {dtype} n={n}: jnp.dot {fmt_timing(tj)}, numpy {fmt_timing(tn)}")
    return rows, summary


def peak_of(rows: Sequence[dict], dtype: str = "float32") -> float | None:
    """The measured matmul peak (FLOP/s) among summary rows: the highest rate of ``jnp.dot`` and numpy in their
    fastest round, over the sizes measured for ``dtype``; None when there is none.

    The fastest round and the highest rate, not a median: the peak is a limit, and on a shared machine a median
    (or the largest product alone, seconds long) falls with the other load, which would flatter every fraction
    of it.
    """
    mine = [r["best_flops_per_s"] for r in rows if r.get("kind") == "peak" and r.get("dtype") == dtype]
    return max(mine) if mine else None


TEXT = """
Two n × n random matrices, C = A B: ``jax.jit(jnp.dot)`` (XLA's CPU dot, Eigen or oneDNN/YNNPACK as jaxlib
builds it, on XLA's intra-op thread pool) against numpy's ``a @ b`` (its BLAS, OpenBLAS in the wheels, on
its own threads), timed in alternation after a warm-up (compile) call, blocking on results. GFLOP/s =
2 n³ / time, from the median (from the fastest round). "rel. diff" is the largest |jnp − numpy| over the
largest |numpy|. The highest rate in a fastest round, over both implementations and all n, is this machine's
measured matmul peak, the yardstick of achieved FLOP/s in the summary table (benchmarks/run.py): not a median,
since on a shared machine a median falls with other load and would flatter every fraction of it.
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 512 and 1024: a smoke run")
    add_out_option(parser)
    add_summary_option(parser)
    args = parser.parse_args(argv[1:])
    sizes, repeats = ((512, 1024), 3) if args.quick else ((2048, 4096), 3)
    start = time.perf_counter()
    head = header("peak.py", argv, notes=["FLOP = 2 n³ a product; times are \"median (best)\" after a warm-up call"])
    log("matmul peak ...")
    rows, summary = bench_peak(sizes, ("float32", "float64"), repeats)
    peak32, peak64 = peak_of(summary, "float32"), peak_of(summary, "float64")
    tab = table(["dtype", "n", "jnp.dot median (best)", "jnp.dot GFLOP/s", "numpy median (best)", "numpy GFLOP/s",
                 "rel. diff", "rounds"], rows)
    verdict = (f"Measured matmul peak: float32 **{peak32 / 1e9:.1f} GFLOP/s**, float64 {peak64 / 1e9:.1f} GFLOP/s "
               f"(the highest rate in a fastest round, over both implementations and n = "
               f"{', '.join(map(str, sizes))}).")
    section = "\n\n".join([head, "### Matmul peak\n\n" + prose(TEXT) + "\n\n" + tab, verdict, footer(start)])
    publish(section, out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main()

