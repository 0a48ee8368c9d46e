"""The EP paper's numerical examples (§6, Fig. 5), as state-space matrices."""

from __future__ import annotations

from epjax.kalman._params import Params, from_state_space

EXAMPLES: dict[str, dict[str, list[list[float]]]] = {
    # Scalar observations: a stationary scalar Gaussian process is reversible, so the EP saturates.
    "scalar": {"A": [[0.9]], "C": [[1.0]], "Q": [[1.0]], "R": [[1.0]]},
    # Vector observations with asymmetric cross-covariances: the EP grows linearly (slope ~0.0654).
    "2d": {
        "A": [[0.8, 0.3], [0.0, 0.5]],
        "C": [[1.0, 0.5], [0.0, 1.0]],
        "Q": [[1.0, 0.0], [0.0, 1.0]],
        "R": [[1.0, 0.0], [0.0, 1.0]],
    },
}


def example(name: str) -> Params:
    """Innovation-form parameters of one of the EP paper's examples, ``"scalar"`` or ``"2d"`` (docs/mathematics.md §5).

    Arrays take JAX's default float dtype: build inside ``jax.enable_x64(True)`` for float64.

    >>> example("2d").obs_dim
    2
    """
    if name not in EXAMPLES:
        raise ValueError(f"`name` must be one of {sorted(EXAMPLES)}, got {name!r}.")
    return from_state_space(**EXAMPLES[name])
