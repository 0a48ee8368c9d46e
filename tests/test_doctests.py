"""Run the docstring examples of the public modules (they document formulas with tiny checks)."""

import doctest
import importlib

import pytest

MODULES = [
    "epjax._reversal",
    "epjax._estimators",
    "epjax._exact",
    "epjax.kalman._params",
    "epjax.kalman._filter",
    "epjax.kalman._exact",
    "epjax.kalman._decomposition",
    "epjax.kalman._examples",
    "epjax.stats",
    "epjax.text",
    "epjax.pretrained.tokenizer",
    "epjax.rnn",
    "epjax.ssm",
    "epjax.transformer",
    "epjax.experiments.markov_training",
    "epjax.experiments.report",
    "epjax.experiments.kalman_comparison",
    "epjax.experiments.saved_models",
    "epjax.experiments.training",
    "epjax.families",
    "epjax.aot",
    "epjax.aot.datasets",
    "epjax.aot.corpus",
    "epjax.experiments.arrow_of_time",
    "epjax.experiments.text_protocol",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
