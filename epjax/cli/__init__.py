"""The ``epjax`` command line: a thin layer over the public API.

Usage::

    epjax demo                                   # built-in end-to-end check, well under a minute on a CPU
    epjax kalman --example 2d --plot fig5.png    # exact EP (eq. 71) vs Monte Carlo, the EP paper's Fig. 5
    epjax train --family transformer --out m.npz # a neural model trained on a built-in irreversible chain
    epjax ep m.npz --plot ep.png                 # its Monte Carlo EP, with the chain's exact value beside it
    epjax decompose --example 2d --steps 20      # per-step D_t = L_t + M_t (retrospective decomposition)
    epjax aot --dataset products --plot aot.png  # arrow-of-time learnability gap of forward/backward twins
    epjax texts --builtin                        # causal vs non-causal texts under SmolLM2 (EP paper Fig. 4)
    epjax sample-lm --samples 200                # EP rates of sampled text, token vs sentence blocks
    epjax block-scale --samples 500              # EP against the scale of the reversal (k sentences, l tokens)
    epjax --version

Each subcommand lives in a private module of this package and registers itself with
:func:`epjax.cli._base.command`; ``epjax demo`` runs every section registered with
:func:`epjax.cli._demo.demo_section`. Exit status: 0 success; 1 a check run by the command failed (e.g. a demo
verdict); 2 invalid input (the message on stderr, no traceback).
"""

# Importing a command module registers its subcommands; the order here is the order of `epjax --help`.
from epjax.cli import _kalman, _neural, _decompose, _aot, _lm, _blocks, _demo  # noqa: F401, I001  (isort: skip)
from epjax.cli._base import COMMANDS, EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, build_parser, main
from epjax.cli._demo import DEMO_SECTIONS, DemoSection
from epjax.cli._neural import prepare_training_data
from epjax.experiments.training import load_sequences

__all__ = [
    "COMMANDS",
    "DEMO_SECTIONS",
    "DemoSection",
    "EXIT_CHECK_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "load_sequences",
    "main",
    "prepare_training_data",
]
