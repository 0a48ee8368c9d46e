"""``epjax train`` (maximum likelihood on token sequences) and ``epjax ep`` (EP of a saved model)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
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
    int_at_least,
    json_number,
    open_fraction,
    positive_float,
    print_written,
    save_figure,
    write_json,
)

NEURAL_FAMILIES = tuple(f.name for f in epjax.families.trainable())
TRAIN_DATA_SUFFIXES = (".npy",)  # anything else is read as text: one sequence of token ids per line




def load_sequences(path: str | Path) -> np.ndarray:
    """Token sequences from a file: a ``.npy`` integer array ``[N, T]``, or text, one sequence per line.

    A text file holds whitespace-separated token ids, one sequence per line; blank lines are skipped and all
    sequences must have the same length.

    Args:
        path: the file.

    Returns:
        int64 ``[N, T]`` with non-negative ids.

    Raises:
        ValueError: the file cannot be read or does not hold equal-length sequences of non-negative integer ids;
            the message names the file (and the line, for text).
    """
    path = Path(path)
    where = f"--data {path}"
    if path.suffix.lower() in TRAIN_DATA_SUFFIXES:
        try:
            data = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
        except ValueError as exc:
            raise ValueError(f"{where}: not a readable .npy array ({exc}).") from None
        if not isinstance(data, np.ndarray):
            raise ValueError(f"{where}: expected one array in .npy format, got {type(data).__name__}.")
        if data.ndim != 2 or min(data.shape) < 1:
            raise ValueError(f"{where}: expected an integer array of sequences [N, T], got shape {data.shape}.")
        if not np.issubdtype(data.dtype, np.integer):
            raise ValueError(f"{where}: expected integer token ids, got dtype {data.dtype}.")
        data = data.astype(np.int64)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
        except UnicodeDecodeError:
            raise ValueError(
                f"{where}: not a UTF-8 text file (give token ids as text, one sequence per line, or a .npy array)."
            ) from None
        rows, first_line = [], None
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            bad = next((f for f in fields if not (f.isascii() and f.isdigit())), None)
            if bad is not None:
                raise ValueError(
                    f"{where}: line {number}: {bad[:20]!r} is not a token id (expected whitespace-separated "
                    "non-negative integers, one sequence per line)."
                )
            row = [int(field) for field in fields]
            if rows and len(row) != len(rows[0]):
                raise ValueError(
                    f"{where}: line {number} has {len(row)} tokens but line {first_line} has {len(rows[0])}; "
                    "all sequences must have the same length."
                )
            first_line = first_line or number
            rows.append(row)
        if not rows:
            raise ValueError(f"{where}: no sequences (the file is empty).")
        data = np.array(rows, dtype=np.int64)
    if data.min() < 0:
        raise ValueError(f"{where}: token ids must be >= 0, got {int(data.min())}.")
    return data


@dataclass
class TrainingData:
    """Training and held-out sequences, and what the CLI says and stores about them."""

    train: np.ndarray
    held_out: np.ndarray
    vocab_size: int
    description: str
    info: dict[str, Any]
    chain: Any = None  # the markov_training.Chain when the data come from the built-in process


def _split(data: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if data.shape[0] < 2:
        raise ValueError(
            f"training needs at least 2 sequences (some are held out for evaluation), got {data.shape[0]}."
        )
    order = np.random.default_rng(seed).permutation(data.shape[0])
    num_eval = min(max(1, round(fraction * data.shape[0])), data.shape[0] - 1)
    return data[order[num_eval:]], data[order[:num_eval]]


def prepare_training_data(args: argparse.Namespace) -> TrainingData:
    """The sequences ``epjax train`` learns from: ``--data FILE`` or the built-in Markov chain (``--process``)."""
    from epjax.experiments import markov_training as mt

    process_options = {"--length": args.length, "--sequences": args.sequences, "--chain-seed": args.chain_seed,
                       "--concentration": args.concentration}
    if args.data is not None:
        given = [option for option, value in process_options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} describe the built-in process; they cannot be used with --data.")
        data = load_sequences(args.data)
        vocab = int(data.max()) + 1 if args.vocab is None else args.vocab
        if int(data.max()) >= vocab:
            raise ValueError(f"--data {args.data}: token id {int(data.max())} is >= --vocab {vocab}.")
        train_data, held_out = _split(data, args.eval_fraction, args.seed)
        description = f"{args.data}: {data.shape[0]} sequences of {data.shape[1]} tokens, vocabulary {vocab}"
        info = {"source": "file", "path": str(args.data), "length": int(data.shape[1]), "vocab_size": vocab,
                "sequences": int(data.shape[0])}
        return TrainingData(train_data, held_out, vocab, description, info)
    vocab = 4 if args.vocab is None else args.vocab
    if vocab < 2:
        raise ValueError(f"--vocab must be >= 2 for the built-in process, got {vocab}.")
    length = 32 if args.length is None else args.length
    num_sequences = 2000 if args.sequences is None else args.sequences
    chain_seed = mt.DEFAULT_CHAIN_SEED if args.chain_seed is None else args.chain_seed
    concentration = 1.0 if args.concentration is None else args.concentration
    chain = mt.make_chain(chain_seed, vocab_size=vocab, concentration=concentration)
    data = mt.sample_sequences(jax.random.key(args.seed), chain, num_sequences, length)
    train_data, held_out = _split(data, args.eval_fraction, args.seed)
    description = (
        f"built-in Markov chain (vocabulary {vocab}, chain seed {chain_seed}, concentration {concentration:g}): "
        f"{num_sequences} stationary sequences of {length} tokens"
    )
    info = {
        "source": "markov", "length": length, "vocab_size": vocab, "sequences": num_sequences,
        "chain_seed": chain_seed, "concentration": concentration,
        "process": {
            "type": "markov", "initial": chain.stationary.tolist(), "transition": chain.transition.tolist(),
            "ep_rate": chain.ep_rate, "entropy_rate": chain.entropy_rate,
        },
    }
    return TrainingData(train_data, held_out, vocab, description, info, chain)


def _num_parameters(params: Any) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _configure_train(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--family", choices=NEURAL_FAMILIES, default="rnn",
                       help="model family (default: rnn; markov fits a first-order chain, the exact reference)")
    model.add_argument("--cell", choices=("gru", "lstm", "elman"), default="gru", help="RNN cell (default: gru)")
    model.add_argument("--ssm-kind", choices=("mamba", "s4d"), default="mamba",
                       help="SSM kind: selective (mamba, default) or linear time-invariant (s4d)")
    model.add_argument("--size", choices=("tiny", "small", "medium"), default="small",
                       help="preset width and depth (default: small: width 32, 1 layer)")
    model.add_argument("--hidden", metavar="N", type=int_at_least(1), default=None,
                       help="width: RNN hidden size, Transformer embedding size, SSM d_model (overrides --size)")
    model.add_argument("--layers", metavar="N", type=int_at_least(1), default=None,
                       help="number of layers (overrides --size)")
    model.add_argument("--heads", metavar="N", type=int_at_least(1), default=None,
                       help="Transformer attention heads (default: 2, or 4 from width 64)")
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="FILE", type=Path, default=None,
                        help="token sequences: a .npy integer array [N, T], or a text file with one sequence of "
                        "whitespace-separated token ids per line")
    source.add_argument("--process", choices=("markov",), default=None,
                        help="sample the data from a built-in process (default when --data is not given): a "
                        "random Markov chain that breaks detailed balance")
    data.add_argument("--vocab", metavar="V", type=int_at_least(1), default=None,
                      help="vocabulary size (default: 4 for --process, max id + 1 for --data)")
    data.add_argument("--length", metavar="T", type=int_at_least(1), default=None,
                      help="--process: tokens per sequence (default: 32)")
    data.add_argument("--sequences", metavar="N", type=int_at_least(2), default=None,
                      help="--process: number of sequences (default: 2000)")
    data.add_argument("--chain-seed", metavar="S", type=int_at_least(0), default=None,
                      help="--process: seed of the chain's transition matrix (default: 20, a clearly irreversible "
                      "4-token chain)")
    data.add_argument("--concentration", metavar="C", type=positive_float, default=None,
                      help="--process: Dirichlet concentration of the chain's rows (default: 1)")
    data.add_argument("--eval-fraction", metavar="F", type=open_fraction, default=0.1,
                      help="fraction of sequences held out for evaluation (default: 0.1)")
    opt = parser.add_argument_group("training")
    opt.add_argument("--steps", metavar="N", type=int_at_least(1), default=1000,
                     help="optimiser steps (default: 1000)")
    opt.add_argument("--batch-size", metavar="B", type=int_at_least(1), default=64,
                     help="sequences per step (default: 64)")
    opt.add_argument("--lr", metavar="LR", type=positive_float, default=3e-3,
                     help="peak learning rate of AdamW (default: 0.003; warm-up then cosine decay)")
    opt.add_argument("--seed", type=int_at_least(0), default=0,
                     help="random seed: data sampling, split, initialisation, batches (default: 0)")
    parser.add_argument("--out", metavar="MODEL.npz", type=Path, required=True,
                        help="where to save the trained model (read back by `epjax ep`)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the training history as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@command("train", help="train a neural model (RNN, Transformer, SSM) on token sequences and save it",
         configure=_configure_train)
def train_command(args: argparse.Namespace) -> int:
    """``epjax train``: maximum likelihood on a file of sequences or the built-in chain; saves ``--out``."""
    from epjax import train as train_lib
    from epjax.experiments import markov_training as mt

    check_output_path("--out", args.out, (".npz",))
    check_output_path("--json", args.json)
    if args.family == "markov" and (args.hidden or args.layers or args.heads):
        raise ValueError("--hidden, --layers and --heads do not apply to --family markov.")
    data = prepare_training_data(args)
    length = int(data.train.shape[1])
    model = epjax.families.new_model(
        args.family, data.vocab_size, context_length=length, size=args.size, width=args.hidden,
        layers=args.layers, cell=args.cell, ssm_kind=args.ssm_kind, num_heads=args.heads,
    )
    config = train_lib.TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        warmup_steps=min(100, args.steps // 10), eval_every=max(1, min(100, args.steps // 10)),
    )
    key_init, key_train = jax.random.split(jax.random.key(args.seed))
    params = model.init(key_init)
    print(f"data: {data.description}; {data.train.shape[0]} for training, {data.held_out.shape[0]} held out")
    if data.chain is not None:
        c = data.chain
        print(
            f"  the chain: EP rate r = {c.ep_rate:.4f} nats/step, entropy rate h = {c.entropy_rate:.4f} nats/token, "
            f"least expected held-out loss l*({length}) = {c.optimal_loss(length):.4f}"
        )
    print(f"model: {model!r} ({_num_parameters(params):,} parameters)")
    initial = float(np.mean(mt.sequence_losses(model, params, data.held_out)))
    start = time.perf_counter()
    params, history = train_lib.train(
        key_train, model, params, data.train, config=config, eval_data=data.held_out,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    final = float(history.eval_loss[-1])
    print(
        f"held-out loss: {initial:.4f} (untrained) -> {final:.4f} nats/token after {args.steps} steps "
        f"({seconds:.1f} s)"
    )
    summary: dict[str, Any] = {"held_out_loss": final, "held_out_loss_untrained": initial}
    if data.chain is not None:
        losses = mt.sequence_losses(model, params, data.held_out)
        chain_losses = mt.sequence_losses(data.chain.model, data.chain.params, data.held_out)
        diff = losses - chain_losses
        excess = float(np.mean(diff))
        excess_se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
        print(
            f"  the chain itself scores {float(np.mean(chain_losses)):.4f} on the same sequences: excess "
            f"{excess:.5f} ± {excess_se:.5f} nats/token (an estimate of KL(chain || model) per token)"
        )
        summary |= {"chain_held_out_loss": float(np.mean(chain_losses)), "excess_loss": excess,
                    "excess_loss_stderr": json_number(excess_se)}
    extra = {
        "data": {k: v for k, v in data.info.items() if k != "process"},
        "training": {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                     "seed": args.seed, "eval_fraction": args.eval_fraction, **summary},
    }
    if "process" in data.info:
        extra["process"] = data.info["process"]
    train_lib.save(args.out, model, params, extra=extra)
    if args.json is not None:
        report = {
            "command": "train", "epjax_version": epjax.__version__, "jax_version": jax.__version__,
            "units": "nats per token", "model": train_lib.model_spec(model), "num_parameters": _num_parameters(params),
            **extra,
            "history": {
                "steps": history.steps.tolist(), "train_loss": [json_number(v) for v in history.train_loss],
                "eval_steps": history.eval_steps.tolist(), "eval_loss": [json_number(v) for v in history.eval_loss],
            },
            "seconds": seconds,
        }
        write_json(args.json, report)
    print(f"saved {args.out}" + (f"; wrote --json {args.json}" if args.json else ""))
    return EXIT_OK


@dataclass
class EPResult:
    """What ``epjax ep`` reports: the estimate and, when known, the exact EP of the process trained on."""

    estimate: Any
    num_steps: int
    block_size: int | None
    temperature: float
    reference: float | None
    reference_note: str


def _process_reference(extra: dict, num_steps: int, block_size: int | None) -> tuple[float | None, str]:
    """The exact EP of the Markov chain a model was trained on (saved by ``epjax train --process markov``)."""
    process = extra.get("process") if isinstance(extra, dict) else None
    if not isinstance(process, dict) or process.get("type") != "markov":
        return None, ""
    with jax.enable_x64(True):
        try:
            params = epjax.markov.from_probabilities(process["initial"], process["transition"])
        except (KeyError, TypeError, ValueError):
            return None, ""
        if block_size is None:
            return float(epjax.markov.entropy_production(params, num_steps)), "exact, from the chain's marginals"
        vocab = int(np.shape(process["initial"])[0])
        if vocab**num_steps > 2**20:
            return None, ""
        chain = epjax.markov.MarkovChain(vocab)
        reversal = _block_reversal(block_size)
        value = epjax.exact_entropy_production(chain, params, num_steps=num_steps, reversal=reversal)
        return float(value), f"exact, by enumerating all {vocab}^{num_steps} sequences"


def _block_reversal(block_size: int) -> Callable:
    import functools

    return functools.partial(epjax.reverse_blocks, block_size=block_size)


def plot_ep(result: EPResult, path: str | Path, title: str) -> None:
    """Two panels: the running mean of sigma with a ± SE band (convergence), and the histogram of sigma.

    Args:
        result: from ``epjax ep``.
        path: the figure file; its extension (.png, .pdf, .svg) sets the format.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    est = result.estimate
    s = np.asarray(est.sigmas, dtype=np.float64)
    n = np.arange(1, s.size + 1)
    mean = np.cumsum(s) / n
    # Running standard error sd_n / sqrt(n) from the running second moment (ddof = 1).
    var = np.maximum(np.cumsum(s**2) / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
    se = np.sqrt(var / n)
    se[0] = np.nan  # one trajectory has no spread
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.fill_between(n, mean - se, mean + se, color="C0", alpha=0.25, lw=0, label="± SE")
    ax1.plot(n, mean, color="C0", lw=1.2, label="running mean of σ")
    if result.reference is not None:
        ax1.axhline(result.reference, color="k", lw=1.2, ls="--", label=f"process, exact = {result.reference:.4g}")
    ax1.set(xscale="log", xlabel="number of trajectories n", ylabel="EP estimate (nats)",
            title=f"S = {est.mean:.4g} ± {est.stderr:.2g}")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.hist(s, bins=min(80, max(10, s.size // 25)), color="C1", alpha=0.8)
    ax2.axvline(est.mean, color="C0", lw=1.5, label=f"mean = {est.mean:.4g}")
    ax2.axvline(0, color="0.3", lw=0.8, ls=":")
    if result.reference is not None:
        ax2.axvline(result.reference, color="k", lw=1.2, ls="--", label="process, exact")
    ax2.set(xlabel="σ = ln P(x) − ln P(reverse(x)) (nats)", ylabel="trajectories",
            title=f"fraction σ < 0: {est.fraction_negative:.3f}, ⟨e^(−σ)⟩ = {est.mean_exp_neg_sigma:.3g}")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _configure_ep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.npz", type=Path, help="a model saved by `epjax train`")
    parser.add_argument("--steps", metavar="T", type=int_at_least(1), default=None,
                        help="trajectory length (default: the length of the sequences the model was trained on)")
    parser.add_argument("--block-size", metavar="L", type=int_at_least(1), default=None,
                        help="coarse-grained EP: reverse the order of blocks of L tokens (T must be a multiple of L); "
                        "default: token-level reversal")
    parser.add_argument("--samples", metavar="N", type=int_at_least(2), default=2000,
                        help="Monte Carlo trajectories (default: 2000)")
    parser.add_argument("--batch-size", metavar="B", type=int_at_least(1), default=None,
                        help="trajectories per compiled batch (default: the library's)")
    parser.add_argument("--temperature", metavar="TAU", type=positive_float, default=None,
                        help="sample and score with logits / TAU (default: the saved model's, normally 1)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: 0)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the estimate and every σ as JSON")
    parser.add_argument("--plot", metavar="FILE", type=Path,
                        help="write the figure (.png, .pdf or .svg): running mean ± SE and the histogram of σ")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@command("ep", help="Monte Carlo entropy production of a model saved by `epjax train`", configure=_configure_ep)
def ep_command(args: argparse.Namespace) -> int:
    """``epjax ep``: EP of a saved model at token level or over blocks, with diagnostics, JSON and a figure."""
    from epjax import train as train_lib

    check_output_path("--json", args.json)
    check_output_path("--plot", args.plot, PLOT_SUFFIXES)
    model, params, extra = train_lib.load(args.model)
    if args.temperature is not None:
        model = model.with_temperature(args.temperature)
    num_steps = args.steps
    if num_steps is None:
        length = extra.get("data", {}).get("length") if isinstance(extra, dict) else None
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"{args.model} does not record its training length; give --steps T.")
        num_steps = length
    if model.max_length is not None and num_steps > model.max_length:
        raise ValueError(f"--steps {num_steps} exceeds the model's context of {model.max_length} tokens.")
    if args.block_size is not None and num_steps % args.block_size:
        raise ValueError(
            f"--block-size {args.block_size} must divide --steps {num_steps} (block reversal needs whole blocks)."
        )
    reversal = epjax.reverse_tokens if args.block_size is None else _block_reversal(args.block_size)
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    est = epjax.entropy_production(
        jax.random.key(args.seed), model, params, num_steps=num_steps, num_samples=args.samples,
        reversal=reversal, progress=not args.no_progress, **options,
    )
    reference, note = (None, "")
    if model.temperature == 1.0:
        reference, note = _process_reference(extra, num_steps, args.block_size)
    result = EPResult(est, num_steps, args.block_size, float(model.temperature), reference, note)
    level = "token level" if args.block_size is None else f"blocks of {args.block_size} tokens"
    print(f"model: {args.model}: {model!r}")
    print(f"entropy production, {level}, T = {num_steps}, N = {est.num_samples} trajectories, seed {args.seed} (nats):")
    rows = [
        ["S = E[σ]", f"{est.mean:.6f} ± {est.stderr:.6f}"],
        ["95% interval", f"[{est.ci_low:.6f}, {est.ci_high:.6f}]"],
        ["S / T (per token)", f"{est.mean / num_steps:.6f}"],
        ["⟨exp(−σ)⟩ (1 in expectation)", f"{est.mean_exp_neg_sigma:.6f} ± {est.exp_neg_sigma_stderr:.6f}"],
        ["fraction σ < 0", f"{est.fraction_negative:.6f}"],
    ]
    if reference is not None:
        z = (est.mean - reference) / est.stderr if est.stderr > 0 else float("nan")
        rows.append([f"training process ({note})", f"{reference:.6f}  (z = {z:+.2f})"])
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    if args.json is not None:
        report = {
            "command": "ep", "epjax_version": epjax.__version__, "jax_version": jax.__version__, "units": "nats",
            "model_file": str(args.model), "model": train_lib.model_spec(model), "num_steps": num_steps,
            "block_size": args.block_size, "temperature": result.temperature, "num_samples": est.num_samples,
            "seed": args.seed, "mean": json_number(est.mean), "stderr": json_number(est.stderr),
            "ci95_low": json_number(est.ci_low), "ci95_high": json_number(est.ci_high),
            "per_token": json_number(est.mean / num_steps),
            "mean_exp_neg_sigma": json_number(est.mean_exp_neg_sigma),
            "exp_neg_sigma_stderr": json_number(est.exp_neg_sigma_stderr),
            "fraction_negative": json_number(est.fraction_negative),
            "reference": json_number(reference), "reference_note": note or None,
            "sigmas": [json_number(v) for v in est.sigmas],
        }
        write_json(args.json, report)
    if args.plot is not None:
        plot_ep(result, args.plot, f"{args.model.name}: {model!r}"[:120])
    print_written(args, "json", "plot")
    return EXIT_OK
