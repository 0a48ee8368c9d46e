"""``epjax decompose``: the retrospective decomposition ``S = sum_t D_t``, ``D_t = L_t + M_t`` (docs/mathematics.md §6).

Exact for Kalman innovation models (the EP paper's examples or user matrices, as in ``epjax kalman``) and, by
enumeration of all ``V**T`` paths, for a small discrete model saved by ``epjax train``; for a saved model,
``--estimate`` also trains a reverse model and reports the estimate that works at any size, with its bias.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

import epjax
from epjax.cli._base import (
    EXIT_OK,
    PLOT_SUFFIXES,
    check_output_path,
    command,
    format_table,
    int_at_least,
    json_number,
    print_written,
    save_figure,
    write_csv,
    write_json,
)
from epjax.cli._kalman import KALMAN_EXAMPLES, example_spec, format_spec, innovation_params, load_state_space

KALMAN_DEFAULT_STEPS = 20
MAX_SEQUENCES = 2**20  # V**T paths: about 20 s for a 6.6k-parameter GRU at V = 4, T = 10
ROWS_SHOWN = 40  # longer tables print their first and last ROWS_SHOWN // 2 steps (--csv and --json have all)


@dataclass
class DecomposeResult:
    """What ``epjax decompose`` reports for one model; the exact arrays are ``None`` where not computed."""

    name: str
    header: list[str]
    num_steps: int
    terms: dict[str, np.ndarray] | None  # D, L, M, forward_information, backward_information
    ep: float | None  # the exact EP computed independently (eq. 71, or enumeration of sigma)
    ep_method: str
    estimate: Any = None  # epjax.decomposition.EstimatedDecomposition, with --estimate
    reverse_loss: float | None = None  # the reverse model's held-out cross-entropy per token, with --estimate
    note: str | None = None  # what the command chose for the user (e.g. a shorter T than the training length)

    @property
    def total(self) -> float | None:
        """``sum_t D_t``."""
        return None if self.terms is None else float(np.sum(self.terms["D"]))


_TERMS = ("D", "L", "M", "forward_information", "backward_information")


def _as_terms(decomposition: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(decomposition, k), dtype=np.float64) for k in _TERMS}


def decompose_kalman(spec: Any, num_steps: int, method: str) -> DecomposeResult:
    """Exact decomposition of one state-space model (float64) and, independently, its exact EP (eq. 71)."""
    with jax.enable_x64(True):
        params = innovation_params(spec)
        terms = _as_terms(epjax.kalman.decomposition(params, num_steps, method=method))
        ep = float(epjax.kalman.entropy_production(params, num_steps))
    return DecomposeResult(spec.name, format_spec(spec, params), num_steps, terms, ep, "eq. 71, O(T) recursion")


def _enumerable_steps(vocab_size: int, limit: int) -> int:
    """The largest ``T`` with ``V**T <= limit``."""
    return max(1, int(math.floor(math.log(limit) / math.log(vocab_size) + 1e-9)))


def decompose_saved(args: argparse.Namespace) -> DecomposeResult:
    """Exact decomposition of a saved discrete model by enumeration, and its reverse-model estimate on request."""
    from epjax import decomposition as dec
    from epjax import train as train_lib

    model, params, extra = train_lib.load(args.saved)
    V = model.vocab_size
    length = extra.get("data", {}).get("length") if isinstance(extra, dict) else None
    enumerable = _enumerable_steps(V, args.max_sequences)
    T = args.steps
    note = None
    if T is None:
        if args.estimate and isinstance(length, int):
            T = length
        else:
            T = min(enumerable, length) if isinstance(length, int) else enumerable
            if isinstance(length, int) and length > enumerable:
                # Never a silent change of the length a user would expect (the training length).
                note = (
                    f"T = {T}, not the training length {length}: exact enumeration of {V}**{length} paths exceeds "
                    f"--max-sequences {args.max_sequences} (T = {enumerable} is the largest that fits); pass "
                    f"--estimate for T = {length} (reverse-model estimate), or --steps / --max-sequences."
                )
    if model.max_length is not None and T > model.max_length:
        raise ValueError(f"--steps {T} exceeds the model's context of {model.max_length} tokens.")
    exact = T <= enumerable
    if not exact and not args.estimate:
        raise ValueError(
            f"--steps {T}: exact enumeration of {V}**{T} sequences exceeds --max-sequences {args.max_sequences} "
            f"(at most T = {enumerable} for this vocabulary); give a smaller --steps, or --estimate for the "
            "reverse-model estimate."
        )
    header = [f"{args.saved.name}: {model!r}  [{args.saved}]"] + ([f"  NOTE: {note}"] if note else [])
    terms = ep = None
    if exact:
        progress = not args.no_progress
        terms = _as_terms(dec.exact_decomposition(
            model, params, num_steps=T, max_sequences=args.max_sequences, progress=progress))
        ep = float(epjax.exact_entropy_production(
            model, params, num_steps=T, max_sequences=args.max_sequences, progress=progress))
    result = DecomposeResult(
        args.saved.name, header, T, terms, ep, f"enumeration of all {V}^{T} paths" if exact else "not computed",
        note=note,
    )
    if args.estimate:
        result.estimate, result.reverse_loss = _estimate(args, model, params, T)
    return result


def _estimate(args: argparse.Namespace, model: Any, params: Any, num_steps: int) -> tuple[Any, float]:
    """The reverse-model estimate of ``D_t`` and the reverse model's held-out loss per token."""
    from epjax import decomposition as dec
    from epjax import train as train_lib

    key = jax.random.key(args.seed)
    config = train_lib.TrainConfig(
        steps=args.reverse_steps, batch_size=64, learning_rate=3e-3, warmup_steps=min(100, args.reverse_steps // 10),
        eval_every=max(1, args.reverse_steps // 10),
    )
    reverse_params, history = dec.train_reverse_model(
        jax.random.fold_in(key, 0), model, params, num_steps=num_steps, num_sequences=args.reverse_sequences,
        config=config, progress=not args.no_progress,
    )
    est = dec.estimate_decomposition(
        jax.random.fold_in(key, 1), model, params, model, reverse_params, num_steps=num_steps,
        num_samples=args.samples,
    )
    return est, float(history.eval_loss[-1])


def _shown_rows(T: int) -> list[int | None]:
    """Indices of the table rows to print; ``None`` marks the omitted middle."""
    if T <= ROWS_SHOWN:
        return list(range(T))
    half = ROWS_SHOWN // 2
    return [*range(half), None, *range(T - half, T)]


def format_decompose_result(result: DecomposeResult) -> str:
    """The per-step table and the totals, with the identities they satisfy spelled out."""
    lines = list(result.header)
    T, terms, est = result.num_steps, result.terms, result.estimate
    headers = ["t"]
    if terms is not None:
        headers += ["D_t", "L_t", "M_t", "I(y_t; h_{t-1})", "I(y_t; g_{t+1})"]
    if est is not None:
        headers += ["D_t estimate ± SE"]
    rows = []
    for i in _shown_rows(T):
        if i is None:
            rows.append(["..."] + [""] * (len(headers) - 1))
            continue
        row = [str(i + 1)]
        if terms is not None:
            row += [f"{terms[k][i]:.6f}" for k in _TERMS]
        if est is not None:
            row += [f"{est.D[i]:.6f} ± {est.D_stderr[i]:.6f}"]
        rows.append(row)
    lines.append(format_table(headers, rows))
    if T > ROWS_SHOWN:
        lines.append(f"  ({T - ROWS_SHOWN} steps not shown; --csv and --json have all {T})")
    if terms is not None:
        total, ep = result.total, result.ep
        L, M = float(np.sum(terms["L"])), float(np.sum(terms["M"]))
        bound = float(np.sum(terms["forward_information"] - terms["backward_information"]))

        def share(x: float) -> str:
            return f" ({100 * x / total:.1f}% of the EP)" if total > 0 else ""

        lines += [
            f"  sum_t D_t = {total:.8f}   exact EP ({result.ep_method}) = {ep:.8f}   |difference| = "
            f"{abs(total - ep):.1e}",
            f"  sum_t L_t = {L:.8f}{share(L)}: compression loss, what the backward summary g_{{t+1}} forgets",
            f"  sum_t M_t = {M:.8f}{share(M)}: model mismatch, the model's prediction from g_{{t+1}} vs the truth",
            f"  refined second law (eq. 101): sum_t [I(y_t; h_{{t-1}}) - I(y_t; g_{{t+1}})] = {bound:.8f} <= EP "
            "(it equals sum_t L_t identically)",
        ]
    if est is not None:
        lines += [
            f"  reverse-model estimate (N = {est.num_samples}; reverse model's held-out loss "
            f"{result.reverse_loss:.4f} nats/token): sum_t D_t estimate = {est.total:.6f} ± {est.total_stderr:.6f}",
            f"  BIAS: each D_t estimate is biased DOWN by the reverse model's excess cross-entropy at step t, which "
            f"lies in [0, b]; the total b = KL(P || R) = {est.bias:.6f} ± {est.bias_stderr:.6f} is estimated "
            "exactly from the model's own likelihood,",
            f"  so sum_t D_t estimate + b = {est.total + est.bias:.6f} ± "
            f"{math.hypot(est.total_stderr, est.bias_stderr):.6f} estimates the EP itself",
        ]
        if result.ep is not None:
            z = (est.total + est.bias - result.ep) / math.hypot(est.total_stderr, est.bias_stderr)
            lines.append(f"  (exact EP {result.ep:.6f}: z = {z:+.2f})")
    return "\n".join(lines)


def _json_list(values: Any) -> list[float | None]:
    return [json_number(float(v)) for v in values]


def decompose_json(results: list[DecomposeResult], **settings: Any) -> dict[str, Any]:
    """Machine-readable results (strict JSON)."""
    models = []
    for r in results:
        entry: dict[str, Any] = {"name": r.name, "num_steps": r.num_steps, "ep": json_number(r.ep),
                                 "ep_method": r.ep_method}
        if r.note:
            entry["note"] = r.note
        if r.terms is not None:
            entry |= {k: _json_list(v) for k, v in r.terms.items()}
            entry |= {"total": json_number(r.total), "compression_loss": json_number(float(np.sum(r.terms["L"]))),
                      "mismatch": json_number(float(np.sum(r.terms["M"]))),
                      "second_law_bound": json_number(float(np.sum(r.terms["forward_information"]
                                                                   - r.terms["backward_information"])))}
        if r.estimate is not None:
            e = r.estimate
            entry["estimate"] = {
                "D": _json_list(e.D), "D_stderr": _json_list(e.D_stderr), "total": json_number(e.total),
                "total_stderr": json_number(e.total_stderr), "bias": json_number(e.bias),
                "bias_stderr": json_number(e.bias_stderr), "num_samples": e.num_samples,
                "reverse_model_held_out_loss": json_number(r.reverse_loss),
                "bias_direction": "downward: each D_t estimate is low by the reverse model's excess cross-entropy "
                "at step t, in [0, bias]",
            }
        models.append(entry)
    return {"command": "decompose", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
            "units": "nats", **settings, "models": models}


_CSV_COLUMNS = ("model", "t", *_TERMS, "D_estimate", "D_estimate_stderr")


def _csv_rows(results: list[DecomposeResult]):
    for r in results:
        for i in range(r.num_steps):
            exact = [float(r.terms[k][i]) for k in _TERMS] if r.terms is not None else [None] * len(_TERMS)
            est = [float(r.estimate.D[i]), float(r.estimate.D_stderr[i])] if r.estimate is not None else [None] * 2
            yield [r.name, i + 1, *exact, *est]


def plot_decompose(results: list[DecomposeResult], path: str | Path) -> None:
    """``D_t``, ``L_t`` and ``M_t`` against ``t``, one panel per model (estimates with ± SE bars)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(results), 3.6), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, r in zip(axes, results, strict=True):
        t = np.arange(1, r.num_steps + 1)
        if r.terms is not None:
            ax.plot(t, r.terms["D"], "-o", ms=3, color="C0", label="$D_t$ (sum = EP)")
            ax.plot(t, r.terms["M"], "--", color="C1", label="$M_t$ model mismatch")
            ax.plot(t, r.terms["L"], ":", color="C2", lw=2, label="$L_t$ compression loss")
        if r.estimate is not None:
            ax.errorbar(t, r.estimate.D, yerr=r.estimate.D_stderr, fmt="s", ms=3, color="C3", capsize=2,
                        label="$D_t$ estimate (reverse model, biased down)")
        ax.set(xlabel="t", ylabel="nats", title=f"{r.name}, T = {r.num_steps}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _configure_decompose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("saved", metavar="MODEL.npz", nargs="?", type=Path, default=None,
                        help="a discrete model saved by `epjax train` (exact by enumerating all V**T paths); "
                        "default: the EP paper's Kalman examples")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--example", choices=[*KALMAN_EXAMPLES, "both"], default=None,
                       help="Kalman: the EP paper's example(s), scalar, 2d or both (the default)")
    which.add_argument("--model", metavar="FILE", type=Path, action="append",
                       help='Kalman: a JSON file {"A": [[...]], "C": [[...]], "Q": [[...]], "R": [[...]]} '
                       "(repeatable, as for `epjax kalman`)")
    parser.add_argument("--steps", metavar="T", type=int_at_least(1), default=None,
                        help=f"sequence length (default: {KALMAN_DEFAULT_STEPS} for Kalman; for a saved model its "
                        "training length, capped where enumeration stops being possible unless --estimate)")
    parser.add_argument("--method", choices=("recursive", "dense"), default="recursive",
                        help="Kalman: O(T) recursion (default) or the dense path-covariance reference")
    parser.add_argument("--max-sequences", metavar="N", type=int_at_least(1), default=MAX_SEQUENCES,
                        help=f"saved model: enumerate at most N = V**T paths (default: {MAX_SEQUENCES})")
    est = parser.add_argument_group("reverse-model estimate (saved model)")
    est.add_argument("--estimate", action="store_true",
                     help="also train a reverse model on reversed samples and estimate D_t with it (biased down "
                     "by its excess cross-entropy; works where enumeration cannot)")
    est.add_argument("--reverse-steps", metavar="N", type=int_at_least(1), default=1000,
                     help="training steps of the reverse model (default: 1000)")
    est.add_argument("--reverse-sequences", metavar="N", type=int_at_least(2), default=4000,
                     help="sampled training sequences of the reverse model (default: 4000)")
    est.add_argument("--samples", metavar="N", type=int_at_least(2), default=4000,
                     help="Monte Carlo trajectories of the estimate (default: 4000)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write every per-step term as JSON")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="write one CSV row per (model, t)")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write D_t, L_t, M_t against t (.png, .pdf or .svg)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@command("decompose", help="retrospective decomposition of EP: per-step D_t = compression loss + model mismatch",
         configure=_configure_decompose)
def decompose_command(args: argparse.Namespace) -> int:
    """``epjax decompose``: the per-step table, totals, and optional JSON, CSV and figure files."""
    check_output_path("--json", args.json)
    check_output_path("--csv", args.csv)
    check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    if args.saved is not None:
        if args.example or args.model:
            raise ValueError("give either MODEL.npz (a saved discrete model) or --example/--model (Kalman), not both.")
        results = [decompose_saved(args)]
    else:
        given = [opt for opt, v in (("--estimate", args.estimate), ("--max-sequences", args.max_sequences
                                                                      != MAX_SEQUENCES)) if v]
        if given:
            raise ValueError(f"{', '.join(given)} applies to a saved model (MODEL.npz), not to Kalman models.")
        if args.model:
            specs = [load_state_space(p) for p in args.model]
        else:
            example = args.example or "both"
            specs = [example_spec(n) for n in (KALMAN_EXAMPLES if example == "both" else [example])]
        T = args.steps or KALMAN_DEFAULT_STEPS
        results = [decompose_kalman(spec, T, args.method) for spec in specs]
    print("Retrospective decomposition of EP (docs/mathematics.md §6, EP paper §7), nats: S = sum_t D_t, "
          "D_t = L_t + M_t;\n  g_{t+1} is the model's summary of the reversed future y_T..y_{t+1}, h_{t-1} of "
          "the past.")
    for result in results:
        print()
        print(format_decompose_result(result))
    if args.json is not None:
        write_json(args.json, decompose_json(results, seed=args.seed, method=args.method))
    if args.csv is not None:
        write_csv(args.csv, _CSV_COLUMNS, _csv_rows(results))
    if args.plot is not None:
        plot_decompose(results, args.plot)
    print_written(args, "json", "csv", "plot")
    return EXIT_OK
