"""Experiments: complete studies built on the model families, the engine and the loaders (nothing below imports them).

Each experiment is a function taking plain arguments (models, files, sizes, seeds) and returning a typed
:class:`~epjax.experiments.report.Result` that renders itself as a table, a JSON-ready dictionary, CSV rows and a
figure; the command line, the demo, the notebooks and the benchmarks all call these functions.

- :mod:`~epjax.experiments.report`: the :class:`Result` base, :class:`Provenance`, :class:`ExperimentError`.
- :mod:`~epjax.experiments.kalman_comparison`: exact vs Monte Carlo EP of Kalman innovation models (the EP
  paper's Fig. 5), JSON state-space model files.
- :mod:`~epjax.experiments.decompositions`: retrospective decompositions of Kalman models and of saved models.
- :mod:`~epjax.experiments.markov_training`: neural models trained on an irreversible Markov chain, whose EP
  converges to the chain's exact value as they learn.
- :mod:`~epjax.experiments.training`: training a family on token sequences (a file or the built-in chain).
- :mod:`~epjax.experiments.saved_models`: Monte Carlo EP of a saved model, with its training chain's exact value.
- :mod:`~epjax.experiments.texts`: causal vs non-causal texts under a language model (the EP paper's Fig. 4).
- :mod:`~epjax.experiments.sampled_text`: EP of text sampled from a language model; the fluctuation check.
- :mod:`~epjax.experiments.text_protocol`: the strict text protocol's checker and the shipped 100 + 100 texts.
- :mod:`~epjax.experiments.block_scale`: how a language model's EP falls as the reversal coarsens (groups of k
  sentences, fixed blocks of l tokens), with the identity fraction.
- :mod:`~epjax.experiments.arrow_of_time`: the arrow-of-time learnability gap of forward and backward twins,
  with the forward model's EP beside it.
- :mod:`~epjax.experiments.demo`: the checks of ``epjax demo``.

"""

from epjax.experiments import (
    arrow_of_time,
    block_scale,
    decompositions,
    demo,
    kalman_comparison,
    markov_training,
    report,
    sampled_text,
    saved_models,
    text_protocol,
    texts,
    training,
)

__all__ = [
    "arrow_of_time",
    "block_scale",
    "decompositions",
    "demo",
    "kalman_comparison",
    "markov_training",
    "report",
    "sampled_text",
    "saved_models",
    "text_protocol",
    "texts",
    "training",
]
