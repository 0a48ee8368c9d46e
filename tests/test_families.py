"""The family registry: every family epjax can save it can load; a user's own family registers and round-trips."""

from __future__ import annotations

import dataclasses
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax
from epjax import families, train


def _small(name: str):
    if name == "llama":
        llama = families.get("llama").module
        config = llama.Config(
            vocab_size=11,
            context_length=8,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            embed_size=8,
            mlp_size=16,
            bos_id=0,
        )
        return llama.Model(config)
    return families.new_model(name, 5, size="tiny", context_length=8)


@pytest.mark.parametrize("name", families.names())
def test_every_family_saves_and_loads(name, tmp_path):
    model = _small(name).with_temperature(1.5)
    params = model.init(jax.random.key(0))
    train.save(tmp_path / "m.npz", model, params)
    loaded, loaded_params, _ = train.load(tmp_path / "m.npz")
    assert loaded == model and type(loaded) is families.get(name).model_class
    x = jnp.array([1, 2, 3, 4, 0, 2])
    np.testing.assert_array_equal(loaded.log_probs(loaded_params, x), model.log_probs(params, x))


def test_registry_is_the_one_list():
    assert [f.name for f in families.trainable()] == ["rnn", "transformer", "ssm", "markov"]
    for family in families.FAMILIES.values():
        assert family.model_class.family == family.name
        assert dataclasses.is_dataclass(family.config_class)
    from epjax.cli import build_parser

    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = next(a.choices for a in train_parser._actions if "--family" in a.option_strings)
    assert tuple(choices) == tuple(f.name for f in families.trainable())
    assert families.get("llama").load_function() is epjax.pretrained.load_gguf
    assert families.get("transformer").load_function() is epjax.pretrained.load_gpt2


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model family 'gpt'; the families are rnn, transformer"):
        families.get("gpt")
    with pytest.raises(ValueError, match="must name a family, got None"):
        families.get(None)
    with pytest.raises(ValueError, match=r"`family` must be one of \('rnn', 'transformer', 'ssm', 'markov'\)"):
        families.new_model("llama", 4)
    with pytest.raises(ValueError, match="has no file loader"):
        families.get("rnn").load_function()
    with pytest.raises(ValueError, match="must be a epjax.markov.Config"):
        families.get("markov").build(epjax.rnn.Config(4))
    with pytest.raises(ValueError, match="invalid config"):
        families.build_model({"family": "markov", "config": {"vocab": 4}})
    with pytest.raises(ValueError, match="must be an epjax.families.Family"):
        families.register("rnn")
    with pytest.raises(ValueError, match="already registered"):
        families.register(families.Family("rnn", "somewhere.else", "another rnn"))


def test_a_users_family_registers_and_round_trips(tmp_path, monkeypatch):
    # The smallest complete family, in a module of the user's own (a bigram model).
    module = types.ModuleType("user_bigram")

    @dataclasses.dataclass(frozen=True)
    class Config:
        vocab_size: int

    class Bigram(epjax.DiscreteModel):
        family = "user_bigram"

        def __init__(self, config, *, temperature=1.0):
            self.config, self.vocab_size, self.temperature = config, config.vocab_size, temperature

        def init(self, key):
            return jax.random.normal(key, (self.vocab_size + 1, self.vocab_size))

        def initial(self, params):
            return jnp.int32(0), params[0]

        def step(self, params, carry, token, position):
            return token, params[token + 1]

    module.Config, module.Model = Config, Bigram
    monkeypatch.setitem(sys.modules, "user_bigram", module)
    families.register(families.Family("user_bigram", "user_bigram", "a bigram model", trainable=False))
    try:
        model = Bigram(Config(3))
        params = model.init(jax.random.key(1))
        train.save(tmp_path / "b.npz", model, params)
        loaded, loaded_params, _ = train.load(tmp_path / "b.npz")
    finally:
        families._REGISTRY.pop("user_bigram")
    assert loaded == model
    # Its EP by enumeration equals that of the same chain written as epjax.markov (an independent oracle).
    chain_params = epjax.markov.Params(
        jax.nn.log_softmax(loaded_params[0]), jax.nn.log_softmax(loaded_params[1:], axis=-1)
    )
    with jax.enable_x64(True):
        ours = epjax.exact_entropy_production(loaded, loaded_params, num_steps=5)
        reference = float(epjax.markov.entropy_production(chain_params, 5))
    assert ours == pytest.approx(reference, rel=1e-5)
