"""Benchmarks of gradients of entropy production, and the float32 accuracy of the exact Kalman EP (issue 12).

Sections (all by default; ``--only NAME[,NAME]`` picks some):

``kalman_gradients``
    Cost of a reverse-mode gradient against the cost of the value, compilation apart, for the exact Kalman EP
    (``kalman.entropy_production``, recursive method) at T = 1e3 ... 1e6 on the EP paper's 2-D example and a
    4-state random model, for the asymptotic rate, and for ``kalman.from_state_space`` (the DARE, differentiated
    implicitly). Both sides are jitted functions of traced parameters (``jax.jit(f)`` and
    ``jax.jit(jax.grad(f))``), compiled ahead of time (the compile time is reported on its own), then timed in
    alternation, blocking on every result; medians and best repeats. The "compiled once" column times
    ``kalman.entropy_production`` on concrete parameters, the path that compiles once for every T.
``kalman_float32``
    Relative error of the float32 exact EP against float64 for the same (float32-rounded) model, T = 1e3 ...
    1e7, for both paper examples, random models and a reversible model with vector observations; with, for
    comparison, the direct sum of eq. 73 that ``entropy_production`` used before issue 12.

``gru_monte_carlo``
    Cost of the Monte Carlo EP gradient of a GRU against the Monte Carlo EP itself: the traceable surrogate's
    gradient (one backward pass) and the host driver's gradient with standard errors (per-trajectory gradients).

Another family's gradient benchmark is one more function ``section(args) -> str`` (markdown) registered in
``SECTIONS``; it can use ``harness.measure`` and ``harness.compile_timed``.

    python benchmarks/gradients.py                      # everything; appends a section to benchmarks/RESULTS.md
    python benchmarks/gradients.py --quick              # small sizes, prints only
    python benchmarks/gradients.py --only kalman_float32 --out -
    python benchmarks/gradients.py --summary-json rows.json   # also the summary rows of benchmarks/run.py
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from harness import (
    add_out_option,
    add_summary_option,
    compile_timed,
    fmt_time,
    fmt_timing,
    footer,
    header,
    log,
    measure,
    paper_model,
    prose,
    publish,
    random_model,
    summary_row,
    table,
    write_summary,
)

import epjax
from epjax import kalman

# ---------------------------------------------------------------------------------------------------- sections


GRADIENT_TEXT = """
Reverse-mode gradient of the exact EP with respect to the innovation-form parameters ``(A, C, K, S)``:
``jax.jit(jax.grad(lambda p: kalman.entropy_production(p, T)))``, a checkpointed scan (chunks of ~√T steps
under ``jax.checkpoint``, O(√T) stored carries), against ``jax.jit(lambda p: kalman.entropy_production(p, T))``
(the same scan, value only). Ratio = gradient median ÷ value median. "compiled once" is
``kalman.entropy_production(p, T)`` on concrete parameters (a loop with a traced trip count, one compilation for
every T). The rate and ``from_state_space`` rows differentiate ``entropy_production_rate(p)`` and
``sum(from_state_space(A, C, Q, R).K)`` (with respect to ``A, C, Q, R``: the DARE's implicit derivative, a
Stein equation).
"""


def value_and_gradient_row(label: str, what: str, fn: Callable, args: tuple, argnums, budget: float,
                           concrete: Callable[[], object] | None = None,
                           summary: list[dict] | None = None) -> list[str]:
    """One table row: ``fn`` and ``grad(fn)`` compiled ahead of time, then timed in alternation (and, with
    ``summary``, the gradient's summary row: no peer, its cost as a multiple of the value's in the note)."""
    f, compile_f = compile_timed(fn, *args)
    g, compile_g = compile_timed(jax.grad(fn, argnums=argnums), *args)
    fns = [lambda: f(*args), lambda: g(*args)] + ([concrete] if concrete is not None else [])
    timings = measure(fns, budget_s=budget)
    tv, tg = timings[:2]
    if summary is not None:
        summary.append(summary_row(
            "gradients", "Kalman", "gradient of exact EP" if what[0].isdigit() else f"gradient of {what}",
            f"{label}, T = {what}" if what[0].isdigit() else label, tg, compile_s=compile_g,
            note=f"gradient ÷ value {tg.median / tv.median:.1f}× (value {fmt_time(tv.median)})",
            value_s=list(tv.rounds)))
    return [label, what, fmt_timing(tv), fmt_timing(tg), f"**{tg.median / tv.median:.1f}×**",
            f"{fmt_time(compile_f)} / {fmt_time(compile_g)}", fmt_timing(timings[2]) if concrete else "–"]


def _entropy_production_at(num_steps: int) -> Callable:
    return lambda p: kalman.entropy_production(p, num_steps)


def _sum_of_gain(A, C, Q, R):
    return jnp.sum(kalman.from_state_space(A, C, Q, R).K)


def section_kalman_gradients(args) -> str:
    steps = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    models = [paper_model("2d"), random_model(0, 4, 2)]
    rows = []
    for m in models:
        params = kalman.from_state_space(*m.matrices)
        for T in steps:
            log(f"  {m.name}, T = {T}")
            concrete = lambda p=params, T=T: kalman.entropy_production(p, T)  # noqa: E731
            rows.append(value_and_gradient_row(m.name, f"{T:,}", _entropy_production_at(T), (params,), 0,
                                               args.budget, concrete, summary=args.summary if T == steps[-1] else None))
        rows.append(value_and_gradient_row(m.name, "rate", kalman.entropy_production_rate, (params,), 0, args.budget,
                                           summary=args.summary))
        mats = tuple(jnp.asarray(x) for x in m.matrices)
        rows.append(value_and_gradient_row(m.name, "from_state_space", _sum_of_gain, mats, (0, 1, 2, 3), args.budget))
    head = ["model", "T", "value", "gradient", "gradient ÷ value", "compile value / gradient", "compiled once"]
    return "### Gradient cost against value cost\n\n" + prose(GRADIENT_TEXT) + "\n\n" + table(head, rows)


FLOAT32_TEXT = """
``|S32 / S64 - 1|`` for ``kalman.entropy_production(params, T)`` (recursive method): ``S32`` computed in float32
from the model built in float32, ``S64`` in float64 from the same float32-rounded innovation-form parameters,
so only float32 round-off in the EP is measured. First number: the current recursion (deviations from the
stationary regime for stable A, docs/mathematics.md §5); in parentheses: the direct sum of eq. 73 that was used
before (two O(T) sums that cancel). The last model is reversible (n = 1: its rate is 0) but has vector
observations: float32 then gives the closed-form rate as a few 1e-8 instead of 0 and the absolute error grows
like T |rate32| (shown as "abs"); for n_y = 1 the rate is exactly 0 and the error stays bounded.
"""


def _direct_sum(params: kalman.Params, num_steps):
    """The direct sum of eq. 73, ``entropy_production``'s formula before issue 12, written out with public names.

    The recursion of docs/mathematics.md §5 on the whitened model (``C <- L^-1 C``, ``K <- K L``, ``S = I``):
    the backward quantities ``N, Rho, Omega`` and the adjoint recursion ``U, W`` of the coupling term, summed
    as written (two O(T) sums that cancel), for a traced ``num_steps`` (one compilation for every T).
    """
    chol = jnp.linalg.cholesky(params.S)
    A, C, K = params.A, jsl.solve_triangular(chol, params.C, lower=True), params.K @ chol
    n, n_y, dtype = A.shape[0], C.shape[0], A.dtype
    eye_n, eye_y = jnp.eye(n, dtype=dtype), jnp.eye(n_y, dtype=dtype)
    F, G = A @ (eye_n - K @ C), A @ K

    def Z(N):  # (I - N)^T C^T C (I - N)
        M = C @ (eye_n - N)
        return M.T @ M

    def step(carry):
        N, Rho, U, W, trace_omega = carry
        D = (F @ N + G @ C) @ G
        ICD = eye_y - C @ D
        FDG = F @ D + G
        omega = ICD @ ICD.T + C @ Rho @ C.T
        N = F @ N @ A + G @ C @ A
        Rho = F @ Rho @ F.T + FDG @ FDG.T
        return N, Rho, A.T @ (U + W) @ A, W + Z(N), trace_omega + jnp.trace(omega)

    N = jnp.zeros((n, n), dtype)
    carry = (N, G @ G.T, jnp.zeros((n, n), dtype), Z(N), jnp.asarray(n_y, dtype))  # Omega_1 = S = I
    count = num_steps - 1

    def chunk(_, carry):
        return jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=256)[0]

    carry = jax.lax.fori_loop(0, count // 256, chunk, carry)
    _, _, U, _, trace_omega = jax.lax.fori_loop(0, count % 256, lambda _, c: step(c), carry)
    return 0.5 * (jnp.sum(U * (K @ K.T)) + trace_omega - num_steps.astype(dtype) * n_y)


def section_kalman_float32(args) -> str:
    steps = [1_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    models = [paper_model("2d"), paper_model("scalar"), random_model(0, 4, 2), random_model(1, 3, 3),
              random_model(2, 4, 3), random_model(4, 1, 3)]
    direct = jax.jit(_direct_sum)
    rows, worst = [], 0.0
    for m in models:
        log(f"  {m.name}")
        p32 = kalman.from_state_space(*m.astype(np.float32).matrices)
        assert p32.A.dtype == jnp.float32
        with jax.enable_x64(True):
            p64 = kalman.Params(*(jnp.asarray(np.asarray(x), jnp.float64) for x in p32))
            rate = float(kalman.entropy_production_rate(p64))
        reversible = p32.state_dim == 1 and p32.obs_dim > 1
        cells = []
        for T in steps:
            s32 = float(kalman.entropy_production(p32, T))
            old = float(direct(p32, jnp.int32(T)))
            with jax.enable_x64(True):
                s64 = float(kalman.entropy_production(p64, T))
            err, err_old = abs(s32 / s64 - 1), abs(old / s64 - 1)
            if not reversible:
                worst = max(worst, err)
            cell = f"{err:.1e} ({err_old:.1e})"
            if reversible:
                cell += f", abs {abs(s32 - s64):.1e}"
            cells.append(cell)
        rows.append([m.name, f"{rate:.4g}", *cells])
    head = ["model", "rate (float64)", *[f"T = {T:.0e}".replace("e+0", "e") for T in steps]]
    summary = (
        f"Largest relative error of the current recursion over the models with a non-zero rate or n_y = 1: "
        f"**{worst:.1e}**."
    )
    body = prose(FLOAT32_TEXT) + "\n\n" + table(head, rows) + "\n\n" + summary
    return "### float32 accuracy of the exact EP\n\n" + body


GRU_TEXT = """
A GRU language model (float32 whatever ``--dtype``), Monte Carlo EP of ``N`` trajectories of ``T`` tokens.
"value": ``epjax.entropy_production`` (sampling with scores, scoring the reversals, one compiled batch of N).
"surrogate gradient": ``jax.jit(jax.value_and_grad(epjax.entropy_production_surrogate))``, the unbiased
score-function gradient with a leave-one-out baseline as one backward pass (what a training loop uses).
"gradient ± SE": ``epjax.entropy_production_gradient`` (a value pass for the baselines, then per-trajectory
gradients in batches of 64 for the standard errors). First calls (compilation included) are given apart;
timed calls alternate.
"""


def _gru_row(width: int, vocab: int, T: int, layers: int, N: int, budget: float,
             summary: list[dict] | None = None) -> list[str]:
    from epjax import rnn

    model = rnn.Model(rnn.Config(vocab_size=vocab, hidden_size=width, num_layers=layers, cell="gru"))
    params = model.init(jax.random.key(0))
    key = jax.random.key(1)
    kw = dict(num_steps=T, num_samples=N)
    surrogate = jax.jit(jax.value_and_grad(lambda p: epjax.entropy_production_surrogate(key, model, p, **kw)))
    fns = [
        lambda: epjax.entropy_production(key, model, params, batch_size=N, **kw),
        lambda: surrogate(params),
        lambda: epjax.entropy_production_gradient(key, model, params, batch_size=64, **kw),
    ]
    # the warm-up calls (compilation included) are the first calls of the table; no rule shortens slow ones
    tv, ts, td = measure(fns, budget_s=budget, slow_first_s=None)
    if summary is not None:
        summary.append(summary_row(
            "gradients", "gru", "Monte Carlo EP surrogate gradient", f"GRU {width} × {layers}, V = {vocab}, T = {T}, "
            f"N = {N}", ts, compile_s=ts.compile, units=N, unit="trajectories",
            note=f"gradient ÷ value {ts.median / tv.median:.1f}×; with standard errors {td.median / tv.median:.1f}×",
            value_s=list(tv.rounds)))
    return [f"{width} × {layers} layers, V = {vocab}", f"{T}", f"{N}", f"{rnn.num_parameters(params):,}",
            fmt_timing(tv), fmt_timing(ts), f"**{ts.median / tv.median:.1f}×**", fmt_timing(td),
            f"**{td.median / tv.median:.1f}×**", " / ".join(fmt_time(t.first) for t in (tv, ts, td))]


def section_gru_monte_carlo(args) -> str:
    sizes = [(64, 64, 64, 2, 256)] if args.quick else [(64, 64, 64, 2, 256), (256, 256, 256, 2, 256)]
    rows = []
    for size in sizes:
        log(f"  GRU width {size[0]}, vocab {size[1]}, T = {size[2]}, N = {size[4]}")
        rows.append(_gru_row(*size, budget=args.budget, summary=args.summary))
    head = ["GRU", "T", "N", "parameters", "value", "surrogate gradient", "÷ value", "gradient ± SE", "÷ value",
            "first calls (value / surrogate / ± SE)"]
    return "### Monte Carlo EP gradient of a GRU\n\n" + prose(GRU_TEXT) + "\n\n" + table(head, rows)


SECTIONS: dict[str, Callable[[argparse.Namespace], str]] = {
    "kalman_gradients": section_kalman_gradients,
    "kalman_float32": section_kalman_float32,
    "gru_monte_carlo": section_gru_monte_carlo,
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, prints only")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections (default: all of {', '.join(SECTIONS)})"
    )
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of the timing sections (the accuracy section always compares both)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed repeats per measurement")
    add_out_option(parser)
    add_summary_option(parser)
    args = parser.parse_args(argv[1:])
    args.summary = []  # the sections' summary rows
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    start = time.perf_counter()
    parts = [header("gradients.py", argv, notes=[
        f"timings in {args.dtype}; times are \"median (best)\" over repeats of ahead-of-time compiled functions; "
        "compile times are `jit(...).lower(...).compile()` on their own."
    ])]
    for name in names:
        log(f"{name} ...")
        with jax.enable_x64(args.dtype == "float64"):
            parts.append(SECTIONS[name](args))
    parts.append(footer(start))
    publish("\n\n".join(parts), out=args.out, quick=args.quick)
    write_summary(args.summary_json, args.summary)


if __name__ == "__main__":
    main()
