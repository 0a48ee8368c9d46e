"""Benchmarks of epjax.kalman, float64, with dynamax's covariance Kalman filter as the peer.

Three parts, each timed after a warm-up call (compilation), blocking on results, with repeats and medians:

(a) exact EP: ``epjax.kalman.entropy_production`` method="dense" (O((T n_y)^3) time, (T n_y)^2 memory)
    against method="recursive" (O(T n^3) time, O(n^2) memory), T = 10 ... 3000 for both, the recursion to 1e6;
(b) log-likelihood throughput: ``epjax.kalman.log_probs`` (steady-state innovation filter) against dynamax's
    ``lgssm_filter`` (time-varying covariance filter) on the same model and data, both jitted, one sequence
    and a vmapped batch; a plain-JAX steady-state scan (epjax's algorithm written with ``@``) is a second
    reference that separates the algorithmic gain from the implementation;
(c) Monte Carlo EP throughput of ``epjax.entropy_production`` on the Kalman model;
(d) scaling: the exponent k of time ~ x^k (least squares on log-log) of the log-likelihood against T and
    against the batch N, of Monte Carlo EP against T and against N, and of the exact recursion against T.

Before timing, the script checks that dynamax and epjax give the same total log-likelihood on the same data
when dynamax's filter starts at the steady state (initial covariance = the DARE solution P), and that dense
and recursive EP agree.

    python benchmarks/kalman.py            # full run, appends a section to benchmarks/RESULTS.md
    python benchmarks/kalman.py --quick    # smoke run, prints only (add --out FILE to append)
    python benchmarks/kalman.py --summary-json rows.json   # also the summary rows of benchmarks/run.py
"""

from __future__ import annotations

import argparse
import math
import sys
from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from harness import (
    StateSpace,
    Timing,
    add_out_option,
    add_summary_option,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    fmt_timing,
    header,
    log,
    measure,
    paper_model,
    prose,
    publish,
    random_model,
    summary_row,
    table,
    timed,
    write_summary,
)
from peak import fit_exponent, kalman_exact_flops, kalman_loglik_flops

import epjax

_precision_before = jax.config.jax_default_matmul_precision
try:
    import dynamax
    from dynamax.linear_gaussian_ssm import (
        ParamsLGSSM,
        ParamsLGSSMDynamics,
        ParamsLGSSMEmissions,
        ParamsLGSSMInitial,
        lgssm_filter,
    )
except ImportError as err:  # the peer is a benchmark-only dependency: pip install -e ".[bench]"
    raise SystemExit(f"benchmarks/kalman.py needs dynamax (pip install -e '.[bench]'): {err}") from err
# dynamax sets jax_default_matmul_precision="float32" globally on import; undo it so that nothing in this run
# (epjax included) computes under a peer's global setting.
jax.config.update("jax_default_matmul_precision", _precision_before)

# Skip dense EP where the library refuses it: its three [T n_y, T n_y] float64 arrays over its default budget
# (kalman.entropy_production(..., max_bytes=2 GiB)).
DENSE_MAX_BYTES = 2 * 2**30
DENSE_MAX_SECONDS = 60.0  # ... or when one run took (or, extrapolated as T^3, would take) longer than this
ROUNDS = dict(min_repeats=5, max_repeats=200)  # this script's timing habit (harness.measure)


# ---------------------------------------------------------------------------------------------------- models


def innovation_params(m: StateSpace):
    """epjax innovation form and the DARE solution P."""
    return epjax.kalman.from_state_space(*m.matrices, return_covariance=True)


def dynamax_params(m: StateSpace, P) -> ParamsLGSSM:
    """The same model as a dynamax LGSSM whose filter starts at the steady state: z_1 ~ N(0, P)."""
    n, n_y = m.A.shape[0], m.C.shape[0]
    f64 = lambda x: jnp.asarray(x, dtype=jnp.float64)
    return ParamsLGSSM(
        initial=ParamsLGSSMInitial(mean=jnp.zeros(n), cov=f64(P)),
        dynamics=ParamsLGSSMDynamics(
            weights=f64(m.A), bias=jnp.zeros(n), input_weights=jnp.zeros((n, 0)), cov=f64(m.Q)
        ),
        emissions=ParamsLGSSMEmissions(
            weights=f64(m.C), bias=jnp.zeros(n_y), input_weights=jnp.zeros((n_y, 0)), cov=f64(m.R)
        ),
    )


def plain_steady_state_loglik(params, y):
    """Reference: the steady-state innovation filter in plain JAX (``@`` products), total log-likelihood."""
    A, C, K, S = params

    def step(xhat, y_t):
        e = y_t - C @ xhat
        return A @ (xhat + K @ e), e

    _, e = jax.lax.scan(step, jnp.zeros(A.shape[0], y.dtype), y)
    chol = jnp.linalg.cholesky(S)
    white = jsl.solve_triangular(chol, e.T, lower=True)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (jnp.sum(white**2) + y.shape[0] * (log_det + y.shape[1] * math.log(2.0 * math.pi)))


# ---------------------------------------------------------------------------------------------------- checks


def check_agreement(models: list[StateSpace], num_steps: int) -> str:
    """Total log-likelihood: epjax vs dynamax (filter started at the steady state) vs plain JAX, same data."""
    rows = []
    for m in models:
        params, P = innovation_params(m)
        y = epjax.kalman.sample(jax.random.key(1), params, num_steps)
        ll_epjax = float(jnp.sum(epjax.kalman.log_probs(params, y)))
        ll_dyn = float(lgssm_filter(dynamax_params(m, P), y).marginal_loglik)
        ll_plain = float(plain_steady_state_loglik(params, y))
        rel = abs(ll_epjax - ll_dyn) / abs(ll_dyn)
        rows.append(
            [
                m.name,
                str(num_steps),
                f"{ll_epjax:.10f}",
                f"{ll_dyn:.10f}",
                f"{rel:.1e}",
                f"{abs(ll_epjax - ll_plain) / abs(ll_plain):.1e}",
            ]
        )
        if not rel < 1e-9:
            raise SystemExit(
                f"epjax and dynamax disagree on {m.name}: {ll_epjax} vs {ll_dyn} (rel {rel:.2e})"
            )
    return table(
        ["model", "T", "epjax Σ log_probs", "dynamax marginal_loglik", "rel. diff", "rel. diff vs plain JAX"],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- (a)


def bench_exact(
    models: list[StateSpace], t_both: list[int], t_recursive_only: list[int], summary: list[dict]
) -> tuple[str, dict[tuple[str, int, int], Timing]]:
    """The table, and the recursive timings by (model name, state size n, T) for the target check."""
    rows, recursive_times = [], {}
    for m in models:
        params, _ = innovation_params(m)
        n_y = params.C.shape[0]
        dense_stop: str | None = None
        last_dense: tuple[int, float] | None = None
        for T in t_both + t_recursive_only:
            recursive = partial(epjax.kalman.entropy_production, params, T, method="recursive")
            dense_fn = partial(epjax.kalman.entropy_production, params, T, method="dense")
            run_dense = False
            if T in t_recursive_only:
                dense_note = "not run"
            elif dense_stop is not None:
                dense_note = dense_stop
            elif 3 * (T * n_y) ** 2 * 8 > DENSE_MAX_BYTES:
                dense_stop = dense_note = f"skipped: 3 (T n_y)² × 8 B = {3 * (T * n_y) ** 2 * 8 / 2**30:.1f} GiB"
            elif last_dense is not None and last_dense[1] * (T / last_dense[0]) ** 3 > DENSE_MAX_SECONDS:
                est = last_dense[1] * (T / last_dense[0]) ** 3
                dense_stop = dense_note = f"skipped: ~{est:.0f} s extrapolated"
            else:
                run_dense = True
            if run_dense:
                rec, dense = measure([recursive, dense_fn], **ROUNDS)
                rec_value, dense_value = float(recursive()), float(dense_fn())
                last_dense = (T, dense.median)
                dense_note = f"rel. diff {abs(dense_value - rec_value) / abs(rec_value):.1e}"
                if dense.median > DENSE_MAX_SECONDS:
                    dense_stop = "skipped: previous run > 60 s"
            else:
                (rec,), dense = measure([recursive], **ROUNDS), None
                rec_value = float(recursive())
            recursive_times[m.name, params.A.shape[0], T] = rec
            if T == min(t_both + t_recursive_only):
                first_compile = rec.compile  # the recursion compiles once per model, at its first T
            if T == max(t_both + t_recursive_only):
                n = params.A.shape[0]
                summary.append(summary_row(
                    "kalman", "Kalman", "exact EP, recursive", f"{m.name}, T = {T:,}", rec, compile_s=first_compile,
                    flops=kalman_exact_flops(n, n_y, T), units=T, unit="steps",
                    dtype="float64",
                    note=f"target < {TARGET_SECONDS:g} s at T = {TARGET_T:,}, n = 4" if n == 4 and T == TARGET_T
                    else "no peer (dense EP is O((T n_y)³))",
                    **({"target_s": TARGET_SECONDS} if n == 4 and T == TARGET_T else {}),
                ))
            ratio = f"{dense.median / rec.median:.3g}×" if dense is not None else "—"
            rows.append(
                [
                    m.name,
                    f"{T:,}",
                    f"{rec_value:.6f}",
                    fmt_timing(rec),
                    fmt_time(rec.compile),
                    fmt_rate(T / rec.median),
                    fmt_timing(dense),
                    fmt_time(dense.compile if dense else None),
                    ratio,
                    dense_note,
                ]
            )
            log(
                f"  exact EP {m.name} T={T}: recursive {fmt_timing(rec)}"
                f"{'' if dense is None else ', dense ' + fmt_timing(dense)}"
            )
    return table(
        [
            "model",
            "T",
            "S_y (recursive)",
            "recursive median (best)",
            "recursive compile",
            "recursive steps/s",
            "dense median (best)",
            "dense compile",
            "dense ÷ recursive",
            "dense: note",
        ],
        rows,
    ), recursive_times


# ---------------------------------------------------------------------------------------------------- (b)


def bench_loglik(
    models: list[StateSpace], lengths: list[int], batch: tuple[int, int], summary: list[dict]
) -> tuple[str, list[tuple[str, str, float, float]]]:
    """The table, and (model, case, median ratio, best ratio) of epjax ÷ dynamax throughput per row."""
    epjax_ll = jax.jit(lambda p, y: jnp.sum(epjax.kalman.log_probs(p, y)))
    dyn_ll = jax.jit(lambda p, y: lgssm_filter(p, y).marginal_loglik)
    plain_ll = jax.jit(plain_steady_state_loglik)
    epjax_batch = jax.jit(jax.vmap(lambda p, y: jnp.sum(epjax.kalman.log_probs(p, y)), in_axes=(None, 0)))
    dyn_batch = jax.jit(jax.vmap(lambda p, y: lgssm_filter(p, y).marginal_loglik, in_axes=(None, 0)))
    plain_batch = jax.jit(jax.vmap(plain_steady_state_loglik, in_axes=(None, 0)))
    rows, ratios = [], []
    for m in models:
        params, P = innovation_params(m)
        dparams = dynamax_params(m, P)
        cases = [(T, 1) for T in lengths] + [(batch[1], batch[0])]
        for T, B in cases:
            if B == 1:
                y = epjax.kalman.sample(jax.random.key(2), params, T)
                fe, fd, fp = epjax_ll, dyn_ll, plain_ll
            else:
                keys = jax.random.split(jax.random.key(3), B)
                y = jax.vmap(partial(epjax.kalman.sample, params=params, num_steps=T))(keys)
                fe, fd, fp = epjax_batch, dyn_batch, plain_batch
            fns = [partial(fe, params, y), partial(fd, dparams, y), partial(fp, params, y)]
            if B == 1:  # the public call as a user makes it: host-side validation + dispatch included
                fns.append(partial(epjax.kalman.log_probs, params, y))
            te, td, tp, *tpub = measure(fns, **ROUNDS)
            steps = T * B
            case = f"{T:,}" if B == 1 else f"{B} × {T:,}"
            ratios.append((m.name, case, td.median / te.median, td.best / te.best))
            n, n_y = params.A.shape[0], params.C.shape[0]
            summary.append(summary_row(
                "kalman", "Kalman", "log-likelihood", f"{m.name}, {case}", te, "dynamax lgssm_filter", td,
                compile_s=te.compile, flops=kalman_loglik_flops(n, n_y, T, B), units=steps, unit="steps",
                note="O(n²) a step (matrix-vector) against dynamax's O(n³) covariance filter",
                T=T, batch=B, model=m.name, dtype="float64"))
            rows.append(
                [
                    m.name,
                    f"{T:,}" if B == 1 else f"{B} × {T:,}",
                    fmt_timing(te),
                    fmt_rate(steps / te.median),
                    fmt_timing(td),
                    fmt_rate(steps / td.median),
                    f"**{fmt_ratio(td, te)}**",
                    fmt_timing(tp),
                    fmt_ratio(tp, te),
                    fmt_timing(tpub[0]) if tpub else "—",
                    f"{fmt_time(te.compile)} / {fmt_time(td.compile)}",
                ]
            )
            log(f"  log-lik {m.name} {B}x{T}: epjax {fmt_timing(te)}, dynamax {fmt_timing(td)}")
    return table(
        [
            "model",
            "T (batch × T)",
            "epjax median (best)",
            "epjax steps/s",
            "dynamax median (best)",
            "dynamax steps/s",
            "epjax ÷ dynamax steps/s",
            "plain-JAX steady median (best)",
            "epjax ÷ plain steps/s",
            "epjax public call",
            "compile epjax / dynamax",
        ],
        rows,
    ), ratios


# ---------------------------------------------------------------------------------------------------- (c)


def call_and_keep(fn, out: list) -> object:
    out.append(fn())
    return out[-1]


def bench_monte_carlo(
    models: list[StateSpace], lengths: list[int], num_samples: int, batch_sizes: list[int], summary: list[dict]
) -> str:
    rows = []
    key = jax.random.key(4)
    for m in models:
        params, _ = innovation_params(m)
        for T in lengths:
            exact = float(epjax.kalman.entropy_production(params, T))
            for b in batch_sizes:
                # the warm-up call compiles the batch function once for this (T, batch_size)
                run = partial(
                    epjax.entropy_production,
                    key,
                    epjax.kalman.model,
                    params,
                    num_steps=T,
                    num_samples=num_samples,
                    batch_size=b,
                )
                _, warm = timed(partial(run, num_samples=b))
                results = []
                (t,) = measure([partial(call_and_keep, run, results)], budget_s=3.0, min_repeats=3, max_repeats=5)
                est = results[-1]  # every call gives the same numbers: the key is fixed
                z = (est.mean - exact) / est.stderr
                summary.append(summary_row(
                    "kalman", "Kalman", "Monte Carlo EP", f"{m.name}, T = {T:,}, N = {num_samples:,}, b = {b:,}", t,
                    compile_s=warm, units=num_samples, unit="trajectories", note=f"z = {z:+.2f} against the exact EP"))
                rows.append(
                    [
                        m.name,
                        f"{T:,}",
                        f"{num_samples:,}",
                        f"{b:,}",
                        fmt_timing(t),
                        fmt_rate(num_samples / t.median),
                        fmt_rate(num_samples * T / t.median),
                        fmt_time(warm),
                        f"{est.mean:.4f} ± {est.stderr:.4f}",
                        f"{exact:.4f}",
                        f"{z:+.2f}",
                    ]
                )
                log(f"  MC {m.name} T={T} b={b}: {fmt_time(t.median)}")
    return table(
        [
            "model",
            "T",
            "N",
            "batch_size",
            "median (best)",
            "trajectories/s",
            "steps/s",
            "warm-up (compile)",
            "estimate ± stderr",
            "exact S_y",
            "z",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- (d)


def _time_points(label: str, make: list[tuple[int, object]]) -> list[tuple[int, Timing]]:
    """``(x, Timing)`` of each ``(x, fn)``, epjax alone, a few rounds each (the warm-up compiles)."""
    out = []
    for x, fn in make:
        (t,) = measure([fn], budget_s=1.0, min_repeats=3, max_repeats=20)
        out.append((x, t))
        log(f"  scaling {label} {x:,}: {fmt_timing(t)}")
    return out


def bench_scaling(m: StateSpace, sweeps: dict[str, list[int]], fixed: dict[str, int],
                  recursive_times: dict[tuple[str, int, int], Timing], summary: list[dict]) -> str:
    """Exponents k of time ~ x^k on model ``m``: log-likelihood against T and N (batch), Monte Carlo EP against T
    and N, the exact recursion against T (its times from part (a))."""
    params, _ = innovation_params(m)
    ll = jax.jit(jax.vmap(lambda p, y: jnp.sum(epjax.kalman.log_probs(p, y)), in_axes=(None, 0)))

    def data(B, T):
        keys = jax.random.split(jax.random.key(5), B)
        return jax.vmap(partial(epjax.kalman.sample, params=params, num_steps=T))(keys)

    def loglik(B, T):
        y = data(B, T)
        return partial(ll, params, y)

    def mc(N, T):
        return partial(epjax.entropy_production, jax.random.key(6), epjax.kalman.model, params, num_steps=T,
                       num_samples=N, batch_size=min(N, fixed["mc_batch"]))

    points = {
        ("log-likelihood", "T", f"N = {fixed['ll_N']}"): _time_points(
            "log-lik T", [(T, loglik(fixed["ll_N"], T)) for T in sweeps["ll_T"]]),
        ("log-likelihood", "N", f"T = {fixed['ll_T']:,}"): _time_points(
            "log-lik N", [(N, loglik(N, fixed["ll_T"])) for N in sweeps["ll_N"]]),
        ("Monte Carlo EP", "T", f"N = {fixed['mc_N']:,}"): _time_points(
            "MC T", [(T, mc(fixed["mc_N"], T)) for T in sweeps["mc_T"]]),
        ("Monte Carlo EP", "N", f"T = {fixed['mc_T']}"): _time_points(
            "MC N", [(N, mc(N, fixed["mc_T"])) for N in sweeps["mc_N"]]),
    }
    rec = sorted((T, t) for (name, _, T), t in recursive_times.items() if name == m.name)
    points["exact EP, recursive", "T", "one sequence"] = rec
    rows = []
    for (task, var, at), pts in points.items():
        xs, ts = [x for x, _ in pts], [t for _, t in pts]
        k = fit_exponent(xs, [t.median for t in ts])
        kb = fit_exponent(xs, [t.best for t in ts])
        cells = ", ".join(f"{x:,}: {fmt_time(t.median)}" for x, t in pts)
        rows.append([task, var, at, cells, f"**{k:.2f}** ({kb:.2f})"])
        summary.append(summary_row(
            "kalman", "Kalman", f"{task}: scaling in {var}", f"{m.name}, {at}, {var} = {xs[0]:,} … {xs[-1]:,}",
            ts[-1], note=f"time ~ {var}^k, k = {k:.2f} (best times {kb:.2f})",
            scaling={"x": var, "values": xs, "median_s": [t.median for t in ts], "k": k, "k_best": kb}))
    return table(["task", "x", "fixed", "x: median time", "exponent k: medians (best)"], rows)


SCALING_TEXT = """
Time against the length T and the number N of sequences (log-likelihood: a ``jax.vmap`` batch of N sequences,
jitted, one compilation per shape; Monte Carlo EP: the public ``epjax.entropy_production`` with N
trajectories in batches of at most {b}) on {model}; k is the least-squares slope of log(time) on log(x) from
the medians (from the best times). Linear work gives k ≈ 1; k < 1 means fixed costs (dispatch, a batch's
set-up) still weigh at the small end. The exact recursion's points are part (a)'s.
"""


# ---------------------------------------------------------------------------------------------------- report


AGREE_TEXT = """
dynamax `lgssm_filter` (covariance filter) on the LGSSM (A, C, Q, R) with z_1 ~ N(0, P), P the DARE solution,
so that its filter is stationary from step 1 and equals epjax's steady-state innovation filter; the same data
(T samples from the model) for both. The run stops if they differ by more than 1e-9 (relative).
"""
EXACT_TEXT = f"""
`epjax.kalman.entropy_production(params, T, method=...)`, the public call (validation included). Dense stops
when its three (T n_y)² float64 arrays would exceed {DENSE_MAX_BYTES / 2**30:.0f} GiB (the library's own budget)
or a run takes (or, extrapolated as T³, would take) more than {DENSE_MAX_SECONDS:.0f} s.
"rel. diff" is |dense − recursive| / |recursive|.
The recursion's horizon is a loop bound, not a shape, so it compiles once per model (its "compile" is paid at
the first T); dense compiles anew for every T.
"""
LOGLIK_TEXT = """
Both jitted, the total log-likelihood of the same data: epjax `jnp.sum(kalman.log_probs(params, y))`
(steady-state innovation filter, O(n²) a step) vs dynamax `lgssm_filter(params, y).marginal_loglik`
(time-varying covariance filter, O(n³) a step, what a user of a generic LGSSM library runs). Batch rows are
`jax.vmap` over sequences. **epjax ÷ dynamax** is the throughput ratio from medians (from best times in
parentheses); > 1 means epjax is faster. The plain-JAX column is epjax's steady-state algorithm written with
`@` products, which separates the algorithmic gain from the implementation. "public call" is
`kalman.log_probs(params, y)` as a user calls it, host-side validation and dispatch included.
"""
MC_TEXT = """
`epjax.entropy_production(key, kalman.model, params, num_steps=T, num_samples=N, batch_size=b)`: each
trajectory costs one sampling scan (which also yields the forward log-probabilities) and one scoring scan of
the reversed sequence; steps/s counts N T. Warm-up is one call with N = b (compiles the batch function).
z = (estimate − exact) / stderr checks the numbers.
"""


TARGET_T, TARGET_SECONDS = 1_000_000, 5.0


def targets(
    recursive_times: dict[tuple[str, int, int], Timing], loglik_ratios: list[tuple[str, str, float, float]]
) -> str:
    """The issue's two targets, judged on this run's medians."""
    lines = []
    big = [(name, t) for (name, n, T), t in recursive_times.items() if n == 4 and T == TARGET_T]
    if big:
        for name, t in big:
            verdict = "met" if t.median < TARGET_SECONDS else "NOT met"
            lines.append(
                f"- recursive exact EP at T = {TARGET_T:,}, n = 4 ({name}): median {fmt_time(t.median)} "
                f"(first call {fmt_time(t.first)}); target < "
                f"{TARGET_SECONDS:g} s: **{verdict}**."
            )
    else:
        lines.append(f"- recursive exact EP at T = {TARGET_T:,}, n = 4: not run at these sizes.")
    slower = [(name, case, r, b) for name, case, r, b in loglik_ratios if r < 1]
    verdict = "met" if not slower else "NOT met"
    detail = "; ".join(f"{name} {case}: {r:.2f}× ({b:.2f}× best)" for name, case, r, b in slower)
    lines.append(
        f"- log-likelihood throughput at least dynamax's: epjax ÷ dynamax median ratio ≥ 1 in "
        f"{len(loglik_ratios) - len(slower)} of {len(loglik_ratios)} cases (lowest "
        f"{min(r for _, _, r, _ in loglik_ratios):.2f}×): **{verdict}**"
        + (f"; below 1: {detail}." if slower else ".")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run (about a minute, mostly compilation)"
    )
    add_out_option(parser)
    add_summary_option(parser)
    args = parser.parse_args(argv[1:])
    models = [paper_model("2d"), random_model(0, 4, 4)]
    if args.quick:
        t_both, t_rec = [10, 100], [10_000]
        lengths, batch = [1_000], (16, 1_000)
        mc_lengths, mc_n, mc_b = [50], 2_048, [1_024]
        sweeps = dict(ll_T=[1_000, 4_000], ll_N=[4, 16], mc_T=[20, 80], mc_N=[256, 1_024])
        fixed = dict(ll_N=4, ll_T=1_000, mc_N=256, mc_T=20, mc_batch=1_024)
    else:
        t_both, t_rec = [10, 30, 100, 300, 1_000, 3_000], [10_000, 100_000, 1_000_000]
        lengths, batch = [1_000, 10_000, 100_000], (256, 1_000)
        mc_lengths, mc_n, mc_b = [50, 1_000], 20_000, [1_024, 4_096]
        sweeps = dict(ll_T=[1_000, 4_000, 16_000, 64_000], ll_N=[16, 64, 256, 1_024], mc_T=[50, 200, 800],
                      mc_N=[2_048, 8_192, 32_768])
        fixed = dict(ll_N=16, ll_T=1_000, mc_N=4_096, mc_T=50, mc_batch=4_096)
    summary: list[dict] = []

    with jax.enable_x64(True):
        head = header(
            "kalman.py",
            argv,
            peers=[dynamax],
            notes=['float64 throughout (`jax.enable_x64`); times are "median (best)" over repeats after a warm-up '
                   'call; "compile" is the first call minus the median.'],
        )
        log("checking agreement ...")
        agree = check_agreement(models, 1_000)
        log("(a) exact EP ...")
        exact, recursive_times = bench_exact(models, t_both, t_rec, summary)
        log("(b) log-likelihood throughput ...")
        loglik, loglik_ratios = bench_loglik(models, lengths, batch, summary)
        log("(c) Monte Carlo EP ...")
        mc = bench_monte_carlo(models, mc_lengths, mc_n, mc_b, summary)
        log("(d) scaling ...")
        scaling = bench_scaling(models[1], sweeps, fixed, recursive_times, summary)

    section = "\n\n".join(
        [
            head,
            "### Agreement check: total log-likelihood, epjax vs dynamax\n\n"
            + prose(AGREE_TEXT)
            + "\n\n"
            + agree,
            "### (a) Exact EP: recursive vs dense\n\n" + prose(EXACT_TEXT) + "\n\n" + exact,
            "### (b) Log-likelihood throughput: epjax vs dynamax\n\n" + prose(LOGLIK_TEXT) + "\n\n" + loglik,
            "### (c) Monte Carlo EP throughput\n\n" + prose(MC_TEXT) + "\n\n" + mc,
            "### (d) Scaling with T and N\n\n"
            + prose(SCALING_TEXT.format(b=fixed["mc_batch"], model=models[1].name))
            + "\n\n"
            + scaling,
            "### Targets\n\n" + targets(recursive_times, loglik_ratios),
        ]
    )
    publish(section, out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)

if __name__ == "__main__":
    main()
