"""The one contract every generic tool relies on: an autoregressive model (docs/architecture.md)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from epjax._xla import model_options

Array = jax.Array
PyTree = Any


@runtime_checkable
class AutoregressiveModel(Protocol):
    """An autoregressive generator whose next-output law is fixed by a deterministic summary of the past.

    Any object with these three attributes gets every EP tool of epjax; nothing needs to subclass this.

    Attributes:
        vocab_size: alphabet size ``V`` for a discrete model (enables exact enumeration), ``None`` for a
            continuous one.

    A model may also define ``sample_with_log_probs(key, params, num_steps) -> (x, log_probs)``; the engine
    then gets the forward score of a sampled trajectory for free. It may define ``check_params(params)``,
    raising ``ValueError`` on invalid parameters; the engine calls it on the concrete parameters before
    compiling, since inside ``jit`` a model can check shapes only, not values. It may carry
    ``xla_cpu_options``, a mapping of XLA compiler options (str to str) that epjax's compiled entry points use
    for its computations on CPU (see :func:`epjax.compiler_options`).
    """

    vocab_size: int | None

    def log_probs(self, params: PyTree, x: Array) -> Array:
        """Per-step ``log p(x_t | x_<t)`` of ``x`` (int ``[T]`` or float ``[T, d]``), shape ``[T]``.

        The first entry is the log-probability under the model's initial distribution. Pure and jit-able.
        """
        ...

    def sample(self, key: Array, params: PyTree, num_steps: int) -> Array:
        """One trajectory of ``num_steps`` outputs by ancestral sampling. Pure and jit-able."""
        ...


def check_model(model: Any) -> None:
    """Raise ``ValueError`` unless ``model`` satisfies the contract."""
    missing = [name for name in ("log_probs", "sample", "vocab_size") if not hasattr(model, name)]
    if missing:
        raise ValueError(
            "`model` must satisfy the epjax model contract (log_probs, sample, vocab_size); "
            f"got {type(model).__name__} without {', '.join(missing)}."
        )
    for name in ("log_probs", "sample"):
        if not callable(getattr(model, name)):
            raise ValueError(f"`model.{name}` must be callable, got {type(getattr(model, name)).__name__}.")
    model_options(model)


def check_params(model: Any, params: PyTree) -> None:
    """Run the model's optional ``check_params(params)`` (outside ``jit``, where values can be checked)."""
    check = getattr(model, "check_params", None)
    if callable(check):
        check(params)
