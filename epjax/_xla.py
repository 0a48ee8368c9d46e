"""XLA compiler options for epjax's compiled entry points, per model and per computation (never global config).

jaxlib 0.10's CPU backend routes matrix products, and the element-wise work it fuses into them, through
YNNPACK by default (``xla_cpu_experimental_ynn_fusion_type``). Those fusions materialise every scalar
constant of a fused element-wise op as a full-size array (GPT-2's GELU has four), and one fusion of a whole
MLP and the read-out ran at half the speed of the same products apart. For the small-width neural families
XLA's own CPU code generation is faster; for SmolLM2 and the float64 Kalman batches the defaults are as fast
or faster (the measurements are in ``benchmarks/RESULTS.md``, "Measurements moved out of docstrings"). So the
choice is the model's: a model may carry ``xla_cpu_options``, a mapping of XLA options for CPU compilations of
its computations (:mod:`epjax.rnn`, :mod:`epjax.transformer` and :mod:`epjax.ssm` carry
:data:`XLA_CPU_EMITTERS`), and epjax's estimators, enumeration, text scoring and training steps compile with
them. :func:`compiler_options` hands the same options to users who compose a model into their own ``jax.jit``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
# XLA's own emitters for dots and fusions: the option's empty value turns every YNNPACK fusion off.
XLA_CPU_EMITTERS: Mapping[str, str] = {YNN_FUSION: ""}


@functools.cache
def _accepted(options: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``options`` where the default backend is a CPU whose jaxlib knows them and XLA_FLAGS leaves them; else ()."""
    if not options or jax.default_backend() != "cpu":
        return ()
    flags = os.environ.get("XLA_FLAGS", "")
    options = tuple((k, v) for k, v in options if k not in flags)  # the user's process-wide choice wins
    if not options:
        return ()
    try:  # an option this jaxlib does not know is refused at compile time: then compile with XLA's defaults
        jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return ()
    return options


def model_options(model: Any) -> tuple[tuple[str, str], ...]:
    """``model.xla_cpu_options`` as sorted pairs (``()`` when absent or None); ValueError when malformed."""
    options = getattr(model, "xla_cpu_options", None)
    if options is None:
        return ()
    strings = lambda pair: isinstance(pair[0], str) and isinstance(pair[1], str)
    if not isinstance(options, Mapping) or not all(map(strings, options.items())):
        raise ValueError(
            "`model.xla_cpu_options` must be a mapping of XLA option names to string values (or None), "
            f"got {options!r}."
        )
    return tuple(sorted(options.items()))


def _key(model: Any) -> tuple[tuple[str, str], ...]:
    return _accepted(model_options(model))


def compiler_options(model: Any) -> dict[str, str]:
    """The XLA compiler options epjax compiles ``model``'s computations with on the default backend.

    A model may carry ``xla_cpu_options`` (the RNN, Transformer and SSM families carry
    ``{"xla_cpu_experimental_ynn_fusion_type": ""}``: XLA's own CPU code generation instead of jaxlib 0.10's
    YNNPACK fusions, measured faster for them; see the module docstring). They are returned on CPU
    only, and not when this jaxlib does not know an option or ``XLA_FLAGS`` already sets it. They apply to one
    computation; pass them to your own ``jit`` to compile a function of the model the way epjax does::

        jax.jit(lambda p, x: epjax.sigma(model, p, x), compiler_options=epjax.compiler_options(model))

    >>> import epjax
    >>> model = epjax.rnn.Model(epjax.rnn.Config(vocab_size=3, hidden_size=4))
    >>> epjax.compiler_options(model) in ({}, {"xla_cpu_experimental_ynn_fusion_type": ""})
    True

    Args:
        model: any model (one without ``xla_cpu_options`` gets ``{}``).

    Returns:
        A new dict (empty where no option applies).
    """
    return dict(_key(model))


@functools.cache
def _jit(fun: Callable, options: tuple[tuple[str, str], ...], static_argnames: tuple[str, ...]) -> Callable:
    return jax.jit(fun, static_argnames=static_argnames, compiler_options=dict(options) or None)


def jit_model(model: Any, fun: Callable, **static: Any) -> Callable:
    """``(*args) -> fun(model, *args, **static)``, compiled with :func:`compiler_options` of ``model``.

    ``model`` and the ``static`` values are static arguments when they hash (every epjax model does: equal
    configurations hash equal), so calls with equal values share one compilation; an unhashable model or value
    is closed over instead, at the price of a compilation per call.
    """
    try:
        hash((model, *static.values()))
    except TypeError:
        return jax.jit(lambda *args: fun(model, *args, **static), compiler_options=compiler_options(model) or None)
    run = jit_for(model, fun, static_argnames=("model", *static))
    return lambda *args: run(model, *args, **static)


def jit_for(model: Any, fun: Callable, *, static_argnames: tuple[str, ...] = ()) -> Callable:
    """``jax.jit(fun, static_argnames=...)`` compiled with :func:`compiler_options` of ``model``.

    One jitted function per (``fun``, options, static names), so module-level functions keep their
    compilation cache across calls; a closure gets a fresh one (as ``jax.jit`` of a new closure would).
    """
    return _jit(fun, _key(model), tuple(static_argnames))
