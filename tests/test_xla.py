"""epjax's per-computation XLA options (epjax._xla): the probe, its fall-backs and the lazy jit wrapper."""

import jax
import jax.numpy as jnp
import pytest

import epjax
from epjax import _xla

YNN = "xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture
def fresh_probe():
    """Forget the cached probe before and after the test (it depends on the environment)."""
    _xla._options.cache_clear()
    yield
    _xla._options.cache_clear()


def test_compiler_options_on_cpu(fresh_probe):
    if jax.default_backend() != "cpu":
        assert epjax.compiler_options() == {}
        return
    # This jaxlib knows the option (the project pins a jaxlib that has YNNPACK fusions): it must be used.
    assert epjax.compiler_options() == {YNN: ""}
    options = epjax.compiler_options()
    options[YNN] = "changed"
    assert epjax.compiler_options() == {YNN: ""}  # a copy each time


def test_unknown_option_falls_back_to_xla_defaults(fresh_probe, monkeypatch):
    monkeypatch.setattr(_xla, "_CPU_OPTIONS", {"xla_cpu_option_that_does_not_exist": ""})
    assert epjax.compiler_options() == {}


def test_the_users_xla_flags_win(fresh_probe, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN}=LIBRARY_FUSION_TYPE_DOT")
    assert epjax.compiler_options() == {}


def test_jit_wrapper_matches_jax_jit():
    calls = []

    @_xla.jit(static_argnames="n")
    def f(x, n):
        calls.append(1)  # traced once per static n
        return jnp.sum(x**n)

    x = jnp.arange(5.0)
    assert float(f(x, n=2)) == float(jax.jit(lambda x: jnp.sum(x**2))(x)) == 30.0
    assert float(f(x + 1, n=2)) == 55.0 and len(calls) == 1
    assert f.__name__ == "f"
