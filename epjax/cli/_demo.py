"""``epjax demo``: built-in end-to-end checks, one registered section each."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax

from epjax import families
from epjax.cli._base import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    command,
    format_table,
    int_at_least,
)
from epjax.cli._kalman import (
    KALMAN_EXAMPLES,
    example_spec,
    format_kalman_result,
    run_kalman_comparison,
)


@dataclass(frozen=True)
class DemoSection:
    """One section of ``epjax demo``.

    Attributes:
        name: short name, selectable with ``epjax demo --only NAME``.
        title: heading printed above the section.
        run: prints the section's results (from the parsed ``demo`` arguments) and returns True when every
            check it makes passes.
    """

    name: str
    title: str
    run: Callable[[argparse.Namespace], bool]


DEMO_SECTIONS: list[DemoSection] = []


def demo_section(name: str, title: str):
    """Append the decorated function ``run(args) -> bool`` to the sections of ``epjax demo``.

    Args:
        name: short name of the section.
        title: heading printed above it.

    Returns:
        A decorator that registers ``run`` and returns it unchanged.
    """

    def register(run: Callable[[argparse.Namespace], bool]) -> Callable[[argparse.Namespace], bool]:
        if any(section.name == name for section in DEMO_SECTIONS):
            raise RuntimeError(f"The demo section {name!r} is registered twice.")
        DEMO_SECTIONS.append(DemoSection(name, title, run))
        return run

    return register



DEMO_KALMAN_STEPS = (5, 10, 20, 50)
DEMO_Z_LIMIT = 4.0


@demo_section("kalman", "Kalman innovation models: exact EP (eq. 71) vs Monte Carlo (EP paper Fig. 5)")
def _demo_kalman(args: argparse.Namespace) -> bool:
    specs = [example_spec(name) for name in KALMAN_EXAMPLES]
    results = run_kalman_comparison(
        specs, DEMO_KALMAN_STEPS, num_samples=args.samples, seed=args.seed, progress=not args.no_progress
    )
    ok = True
    for result in results:
        print(format_kalman_result(result))
        zs = [row.z for row in result.rows]
        passed = all(z is not None and abs(z) <= DEMO_Z_LIMIT for z in zs)
        worst = max((abs(z) for z in zs if z is not None), default=float("nan"))
        verdict = "PASS" if passed else "FAIL"
        relation = "within" if passed else "NOT all within"
        print(
            f"  verdict {result.spec.name}: {verdict}: the {len(zs)} Monte Carlo estimates are {relation} "
            f"{DEMO_Z_LIMIT:g} SE of the exact value (max |z| = {worst:.2f})\n"
        )
        ok &= passed
    return ok


DEMO_NEURAL = dict(length=16, sequences=4000, held_out=1000, steps=500, batch_size=64, learning_rate=1e-2, width=16)


@demo_section("neural", "A tiny GRU trained on an irreversible Markov chain: its EP approaches the chain's exact EP")
def _demo_neural(args: argparse.Namespace) -> bool:
    from epjax import train as train_lib
    from epjax.experiments import markov_training as mt

    settings = DEMO_NEURAL
    L = settings["length"]
    chain = mt.make_chain()
    data = mt.sample_sequences(jax.random.key(args.seed), chain, settings["sequences"], L)
    num_train = settings["sequences"] - settings["held_out"]
    model = families.new_model("rnn", chain.vocab_size, size="tiny", width=settings["width"], cell="gru")
    config = train_lib.TrainConfig(
        steps=settings["steps"], batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        warmup_steps=settings["steps"] // 10, eval_every=settings["steps"],
    )
    print(
        f"chain: {chain.vocab_size} tokens, EP rate r = {chain.ep_rate:.4f} nats/step, entropy rate "
        f"h = {chain.entropy_rate:.4f} nats/token; exact S({L}) = (T - 1) r = {chain.exact_entropy_production(L):.4f}"
    )
    print(
        f"model: GRU, hidden size {settings['width']}; {config.steps} AdamW steps on {num_train} sequences of {L} "
        f"tokens ({settings['held_out']} held out); EP from {args.samples} trajectories of T = {L}"
    )
    run = mt.train_on_chain(
        jax.random.fold_in(jax.random.key(args.seed), 1), model, chain, data[:num_train], data[num_train:],
        config=config, ep_num_steps=L, ep_num_samples=args.samples, progress=not args.no_progress,
    )
    rows = []
    for label, i in (("before training", 0), ("after training", -1)):
        error = run.ep_mean[i] - run.exact_ep
        rows.append([label, f"{run.eval_loss[i]:.4f}", f"{run.ep_mean[i]:.4f} ± {run.ep_stderr[i]:.4f}",
                     f"{error:+.4f}", f"{error / run.ep_stderr[i]:+.2f}"])
    rows.append(["the chain (exact)", f"{run.optimal_loss:.4f}", f"{run.exact_ep:.4f}", "", ""])
    print(format_table(["", "held-out loss", f"EP S({L}) ± SE", "error", "z"], rows))
    tolerance = run.tolerance()
    passed = run.converged()
    print(
        f"  tolerance: 4 SE + sqrt(2 eps_+) s = {tolerance:.4f}, with eps_+ = {run.excess_bound:.5f} nats/token (the "
        f"trained model's excess held-out loss over the chain's, + 2 SE) and s = {run.sensitivity:.2f} (the EP's "
        "first-order sensitivity to learning error)"
    )
    relation = "within" if passed else "NOT within"
    print(
        f"  verdict neural: {'PASS' if passed else 'FAIL'}: the trained GRU's EP is {relation} tolerance of the "
        f"exact value (|error| = {abs(run.error):.4f}) ({run.seconds:.0f} s)\n"
    )
    return passed


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--samples", metavar="N", type=int_at_least(2), default=4000,
        help="Monte Carlo trajectories per estimate (default: 4000)",
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--only", metavar="SECTION", action="append", choices=[s.name for s in DEMO_SECTIONS],
        help=f"run only this section (repeatable; sections: {', '.join(s.name for s in DEMO_SECTIONS)})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@command("demo", help="a quick end-to-end check on built-in examples (exit status 1 if a check fails)",
         configure=_configure_demo)
def demo_command(args: argparse.Namespace) -> int:
    """``epjax demo``: run every registered demo section, print each verdict, fail if any check fails."""
    sections = [s for s in DEMO_SECTIONS if not args.only or s.name in args.only]
    start = time.perf_counter()
    failed = []
    for section in sections:
        print(f"== {section.title} ==\n")
        if not section.run(args):
            failed.append(section.name)
    elapsed = time.perf_counter() - start
    if failed:
        print(f"demo finished in {elapsed:.1f} s: FAILED sections: {', '.join(failed)}")
        return EXIT_CHECK_FAILED
    print(f"demo finished in {elapsed:.1f} s: all {len(sections)} section(s) passed")
    return EXIT_OK
