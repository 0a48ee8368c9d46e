"""Per-model XLA compiler options (epjax._xla): the probe, its fall-backs, the jit helper and bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax
from epjax import _xla, llama, rnn, ssm, transformer

YNN = "xla_cpu_experimental_ynn_fusion_type"
ON_CPU = jax.default_backend() == "cpu"


class Coin:
    """A contract model defined here (i.i.d. tokens), optionally carrying XLA options."""

    vocab_size = 2

    def __init__(self, options=None):
        if options is not None:
            self.xla_cpu_options = options

    def log_probs(self, params, x):
        return jnp.log(params)[x]

    def sample(self, key, params, num_steps):
        return jax.random.categorical(key, jnp.log(params), shape=(num_steps,))


@pytest.fixture
def fresh_probe():
    """Forget the cached probe before and after the test (it depends on the environment)."""
    _xla._accepted.cache_clear()
    yield
    _xla._accepted.cache_clear()


def test_the_measured_families_ask_for_xla_emitters(fresh_probe):
    small_rnn = rnn.Model(rnn.Config(vocab_size=3, hidden_size=4))
    gpt = transformer.Model(transformer.Config(3, 4, 1, 1, 4))
    mamba = ssm.Model(ssm.Config(3, kind="mamba", d_model=4))
    expected = {YNN: ""} if ON_CPU else {}  # this jaxlib knows the option (the project pins one that does)
    for model in (small_rnn, gpt, mamba):
        assert epjax.compiler_options(model) == expected
    # Defaults for SmolLM2's family and the Kalman filter (measured faster with them), and for models that ask
    # for nothing.
    tiny_llama = llama.Model(llama.Config(vocab_size=11, context_length=6, num_layers=1, num_heads=2,
                                          num_kv_heads=1, embed_size=8, mlp_size=8, bos_id=0))
    assert epjax.compiler_options(tiny_llama) == epjax.compiler_options(epjax.kalman.model) == {}
    assert epjax.compiler_options(Coin()) == {}
    options = epjax.compiler_options(gpt)
    options["extra"] = "changed"
    assert epjax.compiler_options(gpt) == expected  # a copy each time


def test_unknown_option_falls_back_to_xla_defaults(fresh_probe):
    assert epjax.compiler_options(Coin({"xla_cpu_option_that_does_not_exist": ""})) == {}


def test_the_users_xla_flags_win(fresh_probe, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{YNN}=LIBRARY_FUSION_TYPE_DOT")
    assert epjax.compiler_options(Coin({YNN: ""})) == {}


@pytest.mark.parametrize("options", [["a", "b"], {"a": 1}, {1: "b"}, "xla"])
def test_malformed_options_are_refused(options):
    with pytest.raises(ValueError, match="model.xla_cpu_options` must be a mapping"):
        epjax.compiler_options(Coin(options))
    with pytest.raises(ValueError, match="model.xla_cpu_options` must be a mapping"):
        epjax.entropy_production(jax.random.key(0), Coin(options), jnp.array([0.5, 0.5]), num_steps=3, num_samples=4)


def test_estimators_run_with_the_models_options(monkeypatch):
    # The engine compiles with the model's options; the estimate is the same quantity (here 0).
    seen = []
    real = _xla._jit

    def spy(fun, options, static_argnames):
        seen.append((fun.__name__, options))
        return real(fun, options, static_argnames)

    monkeypatch.setattr(_xla, "_jit", spy)
    params = jnp.array([0.3, 0.7])
    est = epjax.entropy_production(jax.random.key(0), Coin({YNN: ""}), params, num_steps=4, num_samples=64)
    assert abs(est.mean) < 1e-6 and est.stderr < 1e-6  # float32 sums of the same terms in another order
    assert abs(epjax.exact_entropy_production(Coin({YNN: ""}), params, num_steps=4)) < 1e-6
    wanted = ((YNN, ""),) if ON_CPU else ()
    assert seen == [("_batch", wanted), ("_chunk_terms", wanted)]


def test_jit_for_caches_one_jitted_function_per_options():
    def f(model, x, n):
        return jnp.sum(x**n)

    gpt = transformer.Model(transformer.Config(3, 4, 1, 1, 4))
    a = _xla.jit_for(gpt, f, static_argnames=("model", "n"))
    assert a is _xla.jit_for(gpt, f, static_argnames=("model", "n"))
    assert float(a(gpt, jnp.arange(5.0), n=2)) == 30.0
    np.testing.assert_allclose(_xla.jit_for(Coin(), f, static_argnames=("model", "n"))(Coin(), jnp.ones(3), n=3), 3.0)
