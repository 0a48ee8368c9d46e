"""Sequential vs parallel-in-time (associative-scan) paths: where each wins on this machine, by T and batch size.

Four parts, every pair timed in alternation after a warm-up (compile) call, jitted, blocking on results:

(a) Kalman log-likelihood, float32: ``epjax.kalman.log_probs(method="sequential")`` (one ``lax.scan``) against
    ``method="associative"`` (prefix scan over powers of ``F = A (I - K C)``: ``ceil(log2 T)`` rounds of one
    ``[T, n] x [n, n]`` product), and a third variant, a generic ``jax.lax.associative_scan`` over the pairs
    ``(M_t, b_t)`` with per-step ``n x n`` matrices (written here, not in the library) that shows why the library
    uses the powers: one sequence and a vmapped batch, T = 100 .. 100 000;
(b) float32 accuracy of both filter paths against the float64 sequential filter, long T (1e4, 1e5), stable A;
(c) exact Kalman EP, float64: ``entropy_production(method="recursive")`` against ``method="associative"``;
(d) SSM scoring, float32: a Mamba model's ``log_probs`` with ``scan_chunk="sequential"`` against
    ``"associative"`` (one associative scan over the whole sequence), one sequence and a batch.

Only CPU figures are measured here (no accelerator was available when this was written). On a GPU or TPU the
sequential scans run T dependent steps of tiny kernels, latency-bound, while the associative paths run
O(log T) wide steps, so there the associative paths are expected to win from a few hundred steps on, most for
one long sequence and least for large batches (which already fill the device).

    python benchmarks/scan.py            # full run, appends a section to benchmarks/RESULTS.md
    python benchmarks/scan.py --quick    # smoke run, prints only (add --out FILE to append)
    python benchmarks/scan.py --summary-json rows.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from harness import (
    Timing,
    add_out_option,
    fmt_ratio,
    fmt_timing,
    header,
    log,
    measure_rounds,
    prose,
    publish,
    random_model,
    table,
)

from epjax import kalman, ssm

SCRIPT = "scan.py"
GENERIC_MAX_STEPS = 1_000_000  # T * batch above which the generic scan (T stored n x n matrices) is skipped


def generic_associative(params, y):
    """Innovations by ``jax.lax.associative_scan`` of ``(M_t, b_t)`` with a stored ``n x n`` matrix per step."""
    A, C, K = params.A, params.C, params.K
    n = A.shape[0]
    F, G = A - A @ K @ C, A @ K
    b = jnp.concatenate([jnp.zeros((1, n), y.dtype), y[:-1] @ G.T])
    M = jnp.broadcast_to(F, (y.shape[0], n, n))

    def compose(earlier, later):
        M1, b1 = earlier
        M2, b2 = later
        return M2 @ M1, jnp.einsum("...ij,...j->...i", M2, b1) + b2

    xhat = jax.lax.associative_scan(compose, (M, b))[1]
    return y - xhat @ C.T


def generic_log_probs(params, y):
    """``ln N(e_t; 0, S)`` of the generic scan's innovations (plain JAX: this contrast uses no epjax internals)."""
    e = generic_associative(params, y)
    return jax.scipy.stats.multivariate_normal.logpdf(e, jnp.zeros(e.shape[-1], e.dtype), params.S)


def timed_pair(jobs, budget_s):
    firsts, times = measure_rounds(jobs, budget_s=budget_s, min_repeats=3, max_repeats=50)
    return [Timing.of(ts, first) for ts, first in zip(times, firsts, strict=True)], times, firsts


def row(family, task, size, epjax_s, peer, peer_s, compile_s, units, unit, note):
    return {"script": SCRIPT, "family": family, "task": task, "size": size, "epjax_s": list(epjax_s),
            "peer": peer, "peer_s": list(peer_s) if peer_s is not None else None,
            "compile_s": compile_s, "flops": None, "units": units, "unit": unit, "note": note}


def part_filter(lengths, batches, budget_s, summary):
    m = random_model(0, 4, 2)
    params = kalman.from_state_space(*(jnp.asarray(x, jnp.float32) for x in m.matrices))
    head = ["T", "batch", "sequential", "associative (powers)", "generic associative_scan", "assoc. vs seq.",
            "powers vs generic"]
    rows = []
    for T in lengths:
        for B in batches:
            keys = jax.random.split(jax.random.key(T), B)
            ys = jax.vmap(lambda k, T=T: kalman.sample(k, params, T))(keys)
            fns = [
                jax.jit(jax.vmap(lambda y: kalman.log_probs(params, y))),
                jax.jit(jax.vmap(lambda y: kalman.log_probs(params, y, method="associative"))),
            ]
            if T * B <= GENERIC_MAX_STEPS:  # it stores an n x n matrix per step
                fns.append(jax.jit(jax.vmap(lambda y: generic_log_probs(params, y))))
            log(f"(a) T={T} B={B}")
            timings, times, _ = timed_pair([lambda f=f, ys=ys: f(ys) for f in fns], budget_s)
            seq, par = timings[:2]
            gen = timings[2] if len(timings) > 2 else None
            rows.append([str(T), str(B), fmt_timing(seq), fmt_timing(par), fmt_timing(gen), fmt_ratio(seq, par),
                         fmt_ratio(gen, par) if gen else "—"])
            summary.append(row("kalman", "log-likelihood, associative vs sequential", f"T={T} B={B} n=4",
                               times[1], "epjax method=sequential", times[0], par.compile, T * B, "steps",
                               "float32, jitted vmap"))
    return table(head, rows)


def part_accuracy(lengths):
    m = random_model(0, 4, 2, radius=0.95)
    rows = []
    for T in lengths:
        with jax.enable_x64(True):
            p64 = kalman.from_state_space(*m.matrices)
            y64 = kalman.sample(jax.random.key(1), p64, T)
            ref = np.asarray(kalman.log_probs(p64, y64))
        p32 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x, np.float32)), p64)
        y32 = jnp.asarray(np.asarray(y64, np.float32))
        cells = [str(T)]
        for method in ("sequential", "associative"):
            lp = np.asarray(jax.jit(lambda p, y, mt=method: kalman.log_probs(p, y, method=mt))(p32, y32), np.float64)
            err = np.abs(lp - ref)
            # the per-step errors over the first and the last tenth: does the error grow along the sequence?
            tenth = max(T // 10, 1)
            cells += [f"{err.max():.2e}", f"{err[:tenth].max():.2e} / {err[-tenth:].max():.2e}",
                      f"{abs(lp.sum() - ref.sum()) / abs(ref.sum()):.1e}"]
        rows.append(cells)
    head = ["T", "seq: max abs err", "seq: first / last tenth", "seq: rel. err of sum", "assoc: max abs err",
            "assoc: first / last tenth", "assoc: rel. err of sum"]
    return table(head, rows)


def part_exact(lengths, budget_s, summary):
    rows = []
    with jax.enable_x64(True):
        m = random_model(0, 4, 2)
        params = kalman.from_state_space(*m.matrices)
        for T in lengths:
            fns = [jax.jit(lambda p, mt=mt, T=T: kalman.entropy_production(p, T, method=mt))
                   for mt in ("recursive", "associative")]
            log(f"(c) T={T}")
            (rec, par), times, _ = timed_pair([lambda f=f: f(params) for f in fns], budget_s)
            diff = abs(float(fns[0](params)) - float(fns[1](params)))
            rows.append([str(T), fmt_timing(rec), fmt_timing(par), fmt_ratio(rec, par), f"{diff:.1e}",
                         f"{rec.compile:.1f} s / {par.compile:.1f} s"])
            summary.append(row("kalman", "exact EP, associative vs recursive", f"T={T} n=4", times[1],
                               "epjax method=recursive", times[0], par.compile, T, "steps", "float64, jitted"))
    return table(["T", "recursive", "associative", "assoc. vs rec.", "|difference|", "compile rec. / assoc."], rows)


def part_ssm(lengths, batches, budget_s, summary):
    config = ssm.Config(vocab_size=64, kind="mamba", d_model=64, num_layers=2, d_state=16)
    params = ssm.Model(config).init(jax.random.key(0))
    rows = []
    for T in lengths:
        for B in batches:
            x = jax.random.randint(jax.random.key(T), (B, T), 0, 64)
            fns = [jax.jit(jax.vmap(lambda s, c=c: ssm.Model(
                ssm.Config(**{**config.to_dict(), "scan_chunk": c})).log_probs(params, s)))
                for c in ("sequential", "associative")]
            log(f"(d) T={T} B={B}")
            (seq, par), times, _ = timed_pair([lambda f=f, x=x: f(x) for f in fns], budget_s)
            rows.append([str(T), str(B), fmt_timing(seq), fmt_timing(par), fmt_ratio(seq, par)])
            summary.append(row("ssm", "Mamba scoring, associative vs sequential", f"T={T} B={B}", times[1],
                               "epjax scan_chunk=sequential", times[0], par.compile, T * B, "tokens",
                               "float32, 2 layers, d_model 64, E 128, N 16"))
    return table(["T", "batch", "sequential", "associative", "assoc. vs seq."], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, short timing budget")
    parser.add_argument("--summary-json", default=None, metavar="PATH", help="also write the summary rows as JSON")
    add_out_option(parser)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.quick:
        sizes = dict(filter=((100, 1000), (1, 8)), acc=(1000,), exact=(100,), ssm=((64,), (1, 4)), budget=0.2)
    else:
        sizes = dict(filter=((100, 1000, 10_000, 100_000), (1, 64)), acc=(10_000, 100_000),
                     exact=(100, 1000, 10_000), ssm=((256, 2048), (1, 16)), budget=1.0)
    summary: list[dict] = []
    notes = [
        "CPU only; the machine was shared with other jobs (load average below), so absolute times are noisy; "
        "every pair is timed in alternation, and its ratio is the figure to read",
        "cells: median (fastest) over repeats; ratios > 1: the associative path is faster",
    ]
    sections = [header(SCRIPT, [sys.argv[0], *(argv if argv is not None else sys.argv[1:])], notes=notes)]
    filter_table = part_filter(*sizes["filter"], sizes["budget"], summary)
    sections += ["### (a) Kalman log-likelihood, float32, n = 4, n_y = 2", filter_table]
    sections += ["### (b) float32 accuracy of the filter against float64 (n = 4, n_y = 2, spectral radius 0.95)",
                 part_accuracy(sizes["acc"])]
    sections += ["### (c) exact Kalman EP, float64, n = 4, n_y = 2", part_exact(sizes["exact"], sizes["budget"],
                                                                                summary)]
    sections += ["### (d) SSM (Mamba) scoring, float32", part_ssm(*sizes["ssm"], sizes["budget"], summary)]
    sections.append(prose(READING))
    sections.append(f"Total run time {time.perf_counter() - start:.0f} s; load average at the end "
                    f"{', '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}.")
    publish("\n\n".join(sections), out=args.out, quick=args.quick)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1) + "\n")
        log(f"summary rows written to {args.summary_json}")


READING = """How to read this. On a CPU the sequential scans are a tight loop of O(n^2) (filter) or O(n^3) (EP) work
per step with no parallelism to exploit, so they do the least work and usually win; the associative paths do
more work (filter: O(T n^2 log T) instead of O(T n^2); EP: a cascade of associative scans, several times the
recursion's O(T n^3), and O(T n^2) memory instead of O(n^2)) in O(log T) dependent rounds, which pays off only
where the rounds are wide enough to use parallel hardware. The generic lax.associative_scan of (M_t, b_t) pairs
multiplies n x n matrices at every combine and stores T of them; the library's prefix scan over powers of the one
transition matrix avoids both. Expected on an accelerator (not measured here): the associative paths win for
long single sequences, from a few hundred steps on, and the advantage shrinks as the batch grows."""


if __name__ == "__main__":
    main()
