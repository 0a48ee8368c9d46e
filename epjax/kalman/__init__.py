"""Linear Gaussian models in steady-state Kalman innovation form (docs/mathematics.md §5, EP paper §6).

The steady-state Kalman filter of ``x_{t+1} = A x_t + w_t, y_t = C x_t + v_t`` used as a generator: exact
log-likelihoods, sampling, the innovation reversal matrix ``R = H^{-1} J H``, the exact entropy production
(dense, and an O(T) recursion), and its asymptotic rate.
"""

from epjax.kalman._decomposition import Decomposition, decomposition
from epjax.kalman._exact import (
    EntropyProduction,
    entropy_production,
    entropy_production_curve,
    entropy_production_rate,
    reversal_matrix,
)
from epjax.kalman._examples import EXAMPLES, example
from epjax.kalman._filter import (
    KalmanModel,
    innovations,
    log_probs,
    model,
    sample,
    sample_with_log_probs,
)
from epjax.kalman._params import Params, as_params, from_state_space

__all__ = [
    "Decomposition",
    "decomposition",
    "EXAMPLES",
    "example",
    "EntropyProduction",
    "KalmanModel",
    "Params",
    "as_params",
    "entropy_production",
    "entropy_production_curve",
    "entropy_production_rate",
    "from_state_space",
    "innovations",
    "log_probs",
    "model",
    "reversal_matrix",
    "sample",
    "sample_with_log_probs",
]
