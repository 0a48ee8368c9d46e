"""XLA compiler options for epjax's own compiled entry points, per computation (never global JAX config).

jaxlib 0.10's CPU backend routes matrix products, and the element-wise work it fuses into them, through
YNNPACK by default (``xla_cpu_experimental_ynn_fusion_type``). On the 2-core AVX2 machine of
``benchmarks/RESULTS.md`` XLA's own CPU code generation is faster for every family measured: Transformer
scoring 6.0 s -> 3.5 s (B = 256, T = 256, width 256), large float32 GEMMs 60 -> 84 GFLOP/s, a 1-D Kalman
Monte Carlo batch 14.7 -> 2.2 ms. YNNPACK's fusions materialise every scalar constant of a fused
element-wise op (GPT-2's GELU has four) as a full-size array, and one fusion of a whole MLP and the read-out
ran at half the speed of the same products apart. So epjax compiles its estimators, enumeration, text
scoring and training steps with that option cleared on CPU, and :func:`compiler_options` hands the same
options to users who compose epjax's functions into their own ``jax.jit``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

_YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
_CPU_OPTIONS = {_YNN_FUSION: ""}  # empty: no YNNPACK fusions, XLA's own emitters for dots and fusions


@functools.cache
def _options() -> tuple[tuple[str, str], ...]:
    if jax.default_backend() != "cpu":
        return ()
    if _YNN_FUSION in os.environ.get("XLA_FLAGS", ""):
        return ()  # the user chose a setting for the whole process: keep it
    try:  # an option this jaxlib does not know is refused at compile time: then compile with XLA's defaults
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(np.float32(0)).compile()
    except jax.errors.JaxRuntimeError:
        return ()
    return tuple(_CPU_OPTIONS.items())


def compiler_options() -> dict[str, str]:
    """The XLA compiler options epjax compiles its own entry points with on the default backend.

    On CPU ``{"xla_cpu_experimental_ynn_fusion_type": ""}``: XLA's own CPU code generation instead of
    jaxlib 0.10's YNNPACK fusions (measured faster for every model family; see the module docstring). Empty
    on GPU and TPU, with a jaxlib that does not know the option, and when ``XLA_FLAGS`` already sets it.
    The options apply to one computation only; pass them to your own ``jit`` to compile a function that
    composes epjax's models the same way::

        jax.jit(lambda p, x: epjax.sigma(model, p, x), compiler_options=epjax.compiler_options())

    >>> import epjax
    >>> sorted(epjax.compiler_options()) in ([], ["xla_cpu_experimental_ynn_fusion_type"])
    True

    Returns:
        A new dict (empty where no option applies).
    """
    return dict(_options())


def jit(fun: Callable | None = None, **kwargs: Any) -> Callable:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options`, decided at the first call.

    The backend is only known once JAX has started, so the jitted function is built lazily: importing epjax
    never initialises a backend. Usable as ``jit(f, static_argnames=...)`` or as a decorator.
    """
    if fun is None:
        return functools.partial(jit, **kwargs)
    jitted = None

    @functools.wraps(fun)
    def call(*args, **kw):
        nonlocal jitted
        if jitted is None:
            jitted = jax.jit(fun, compiler_options=compiler_options() or None, **kwargs)
        return jitted(*args, **kw)

    return call
