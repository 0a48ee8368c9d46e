"""epjax: entropy production (the arrow of time) of autoregressive generative models, in JAX.

The generic engine works on any object satisfying the model contract (:class:`AutoregressiveModel`):
time reversals, the stochastic EP ``sigma``, the Monte Carlo estimator and exact enumeration. Each estimator
has a pure core for use inside your own ``jit``/``vmap``/``grad`` (:func:`sample_sigmas`, :func:`summarize`,
:func:`entropy_production_surrogate`, the exact tools with traced parameters) under the host-side drivers most
people call (:func:`entropy_production`, :func:`entropy_production_gradient`). Model families live in their own
namespaces (:mod:`epjax.kalman`, ...). The mathematics is in ``docs/mathematics.md``, the architecture in
``docs/architecture.md``.
"""

from epjax import decomposition, kalman, markov, rnn, ssm, stats, transformer
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
from epjax._reversal import reverse_blocks, reverse_segments, reverse_tokens
from epjax._xla import compiler_options

__version__ = "0.1.0"

__all__ = [
    "AutoregressiveModel",
    "compiler_options",
    "decomposition",
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
    "sigma",
    "summarize",
]
