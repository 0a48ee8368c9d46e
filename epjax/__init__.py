"""epjax: entropy production (the arrow of time) of autoregressive generative models, in JAX.

The generic engine works on any object satisfying the model contract (:class:`AutoregressiveModel`):
time reversals, the stochastic EP ``sigma``, the Monte Carlo estimator and exact enumeration. Each estimator
has a pure core for use inside your own ``jit``/``vmap``/``grad`` (:func:`sample_sigmas`, :func:`summarize`,
:func:`entropy_production_surrogate`, the exact tools with traced parameters) under the host-side drivers most
people call (:func:`entropy_production`, :func:`entropy_production_gradient`). Model families live in their own
namespaces (:mod:`epjax.kalman`, ...). The mathematics is in ``docs/mathematics.md``, the architecture in
``docs/architecture.md``.
"""

import importlib

from epjax import decomposition, discrete, kalman, markov, rnn, ssm, stats, transformer
from epjax._contract import AutoregressiveModel
from epjax._estimators import (
    Estimate,
    GradientEstimate,
    entropy_production,
    entropy_production_gradient,
    entropy_production_surrogate,
    estimate_from_samples,
    sample_sigmas,
    sigma,
    summarize,
)
from epjax._exact import exact_entropy_production
from epjax._reversal import reverse_blocks, reverse_segments, reverse_tokens, segment_reversal
from epjax._xla import compiler_options
from epjax.discrete import DiscreteModel

__version__ = "0.1.0"

# Submodules with heavier imports (optax training, tokenizers, file readers, plotting-side experiments) load on
# first access, so ``import epjax`` stays light and ``epjax.train`` still works without an explicit import.
_LAZY_SUBMODULES = ("aot", "experiments", "families", "pretrained", "text", "train")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"epjax.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'epjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_SUBMODULES])


__all__ = [
    "AutoregressiveModel",
    "compiler_options",
    "decomposition",
    "discrete",
    "DiscreteModel",
    "Estimate",
    "entropy_production",
    "entropy_production_gradient",
    "entropy_production_surrogate",
    "estimate_from_samples",
    "GradientEstimate",
    "exact_entropy_production",
    "kalman",
    "markov",
    "rnn",
    "ssm",
    "stats",
    "transformer",
    "reverse_blocks",
    "reverse_segments",
    "reverse_tokens",
    "sample_sigmas",
    "segment_reversal",
    "sigma",
    "summarize",
]
