"""Experiments: end-to-end studies built on the model families and the EP engine (never imported by them).

- :mod:`epjax.experiments.markov_training`: neural models trained on sequences of an irreversible Markov chain,
  whose entropy production converges to the chain's exact value as they learn.
"""

from epjax.experiments import markov_training

__all__ = ["markov_training"]
