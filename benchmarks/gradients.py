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
``SECTIONS``; it can use ``measure_pair`` and ``compile_timed``.

    python benchmarks/gradients.py                      # everything; appends a section to benchmarks/RESULTS.md
    python benchmarks/gradients.py --quick              # small sizes, prints only
    python benchmarks/gradients.py --only kalman_float32 --out -
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from harness import compile_timed, cpu_flags, cpu_model, fmt_time, fmt_timing, git_revision, measure_pair, prose, table

import epjax
from epjax import kalman

RESULTS = Path(__file__).with_name("RESULTS.md")


def header(argv: list[str], dtype: str) -> str:
    import jaxlib

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return "\n".join(
        [
            f"## {now} — benchmarks/gradients.py",
            "",
            f"- device: CPU {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `jax.devices()` = "
            f"`{jax.devices()}`; load average at start {load}",
            f"- versions: python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
            f"numpy {np.__version__}, epjax {epjax.__version__}",
            f"- epjax source: {git_revision()}",
            f"- command: `{shlex.join(['python', *argv])}`",
            f"- timings in {dtype}; times are \"median (best)\" over repeats of ahead-of-time compiled functions; "
            "compile times are `jit(...).lower(...).compile()` on their own.",
        ]
    )


# ---------------------------------------------------------------------------------------------------- models


def paper(name: str) -> tuple[str, dict[str, np.ndarray]]:
    label = {"scalar": "paper scalar (n=1, n_y=1)", "2d": "paper 2-D (n=2, n_y=2)"}[name]
    return label, {k: np.asarray(v, np.float64) for k, v in kalman.EXAMPLES[name].items()}


def random_model(seed: int, n: int, n_y: int, radius: float = 0.9) -> tuple[str, dict[str, np.ndarray]]:
    """A random stable model with positive definite noise covariances (as tests/helpers.py)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    C = rng.normal(size=(n_y, n))
    Bq = rng.normal(size=(n, n))
    Br = rng.normal(size=(n_y, n_y))
    matrices = dict(A=A, C=C, Q=Bq @ Bq.T + 0.1 * np.eye(n), R=Br @ Br.T + 0.1 * np.eye(n_y))
    return f"random (n={n}, n_y={n_y}, seed {seed})", matrices


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
                           concrete: Callable[[], object] | None = None) -> list[str]:
    """One table row: ``fn`` and ``grad(fn)`` compiled ahead of time, then timed in alternation."""
    f, compile_f = compile_timed(fn, *args)
    g, compile_g = compile_timed(jax.grad(fn, argnums=argnums), *args)
    fns = [lambda: f(*args), lambda: g(*args)] + ([concrete] if concrete is not None else [])
    timings = measure_pair(fns, budget_s=budget)
    tv, tg = timings[:2]
    return [label, what, fmt_timing(tv), fmt_timing(tg), f"**{tg.median / tv.median:.1f}×**",
            f"{fmt_time(compile_f)} / {fmt_time(compile_g)}", fmt_timing(timings[2]) if concrete else "–"]


def _entropy_production_at(num_steps: int) -> Callable:
    return lambda p: kalman.entropy_production(p, num_steps)


def _sum_of_gain(A, C, Q, R):
    return jnp.sum(kalman.from_state_space(A, C, Q, R).K)


def section_kalman_gradients(args) -> str:
    steps = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    models = [paper("2d"), random_model(0, 4, 2)]
    rows = []
    for label, m in models:
        params = kalman.from_state_space(**m)
        for T in steps:
            print(f"  {label}, T = {T}", file=sys.stderr, flush=True)
            concrete = lambda p=params, T=T: kalman.entropy_production(p, T)  # noqa: E731
            rows.append(value_and_gradient_row(label, f"{T:,}", _entropy_production_at(T), (params,), 0,
                                               args.budget, concrete))
        rows.append(value_and_gradient_row(label, "rate", kalman.entropy_production_rate, (params,), 0, args.budget))
        mats = tuple(jnp.asarray(m[k]) for k in "ACQR")
        rows.append(value_and_gradient_row(label, "from_state_space", _sum_of_gain, mats, (0, 1, 2, 3), args.budget))
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


def _direct_sum(params, num_steps):
    """The direct sum of eq. 73, ``entropy_production``'s formula before issue 12 (kept for A not stable)."""
    from epjax.kalman import _exact

    wparams = _exact._whiten(params)
    init, step, value = _exact._direct_setup(wparams)
    count = num_steps - 1

    def chunk(_, carry):
        return jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=256)[0]

    carry = jax.lax.fori_loop(0, count // 256, chunk, init)
    carry = jax.lax.fori_loop(0, count % 256, lambda _, c: step(c), carry)
    return value(carry, num_steps.astype(wparams.A.dtype))


def section_kalman_float32(args) -> str:
    steps = [1_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    models = [paper("2d"), paper("scalar"), random_model(0, 4, 2), random_model(1, 3, 3), random_model(2, 4, 3),
              random_model(4, 1, 3)]
    direct = jax.jit(_direct_sum)
    rows, worst = [], 0.0
    for label, m in models:
        print(f"  {label}", file=sys.stderr, flush=True)
        p32 = kalman.from_state_space(**{k: np.asarray(v, np.float32) for k, v in m.items()})
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
        rows.append([label, f"{rate:.4g}", *cells])
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


def _gru_row(width: int, vocab: int, T: int, layers: int, N: int, budget: float) -> list[str]:
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
    first = []
    for fn in fns:
        t0 = time.perf_counter()
        jax.block_until_ready(jax.tree_util.tree_leaves(fn()))
        first.append(time.perf_counter() - t0)
    tv, ts, td = measure_pair(fns, budget_s=budget, min_repeats=3)
    return [f"{width} × {layers} layers, V = {vocab}", f"{T}", f"{N}", f"{rnn.num_parameters(params):,}",
            fmt_timing(tv), fmt_timing(ts), f"**{ts.median / tv.median:.1f}×**", fmt_timing(td),
            f"**{td.median / tv.median:.1f}×**", " / ".join(fmt_time(t) for t in first)]


def section_gru_monte_carlo(args) -> str:
    sizes = [(64, 64, 64, 2, 256)] if args.quick else [(64, 64, 64, 2, 256), (256, 256, 256, 2, 256)]
    rows = []
    for size in sizes:
        print(f"  GRU width {size[0]}, vocab {size[1]}, T = {size[2]}, N = {size[4]}", file=sys.stderr, flush=True)
        rows.append(_gru_row(*size, budget=args.budget))
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
    parser.add_argument(
        "--out",
        default=None,
        help=f"markdown file to append to (default: {RESULTS} for a full run; a --quick run only prints unless --out "
        "is given; '-' prints only)",
    )
    args = parser.parse_args(argv[1:])
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    out = args.out if args.out is not None else (None if args.quick else str(RESULTS))
    out = None if out == "-" else out

    start = time.perf_counter()
    parts = [header(argv, args.dtype)]
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        with jax.enable_x64(args.dtype == "float64"):
            parts.append(SECTIONS[name](args))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    parts.append(f"Total run time {time.perf_counter() - start:.0f} s; load average at the end {load}.")
    section = "\n\n".join(parts)
    print(section)
    if out:
        path = Path(out)
        previous = path.read_text() if path.exists() else ""  # re-read just before appending: others append too
        with path.open("a") as f:
            f.write(("" if previous.endswith("\n") or not previous else "\n") + "\n" + section + "\n")
        print(f"appended to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
