"""The shared cached decoder (epjax._decoder) and the Llama family as a family: GQA attention against a
repeat-kv NumPy oracle, the cached row against the parallel pass, both cache layouts, save/load through
epjax.train and the family registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax
from epjax import _decoder, llama, transformer
from epjax._decoder import Cache, CachedDecoder, cached_attention, causal_attention


def numpy_attention(q, k, v):
    """[T, H*K] from q [H, T, K], k, v [G, T, K]: kv heads repeated H / G times, one query row at a time."""
    H, T, K = q.shape
    G = k.shape[0]
    k, v = np.repeat(k, H // G, axis=0), np.repeat(v, H // G, axis=0)  # transformers' repeat_kv
    out = np.zeros((T, H, K))
    for h in range(H):
        for t in range(T):
            s = k[h, : t + 1] @ q[h, t] / np.sqrt(K)
            w = np.exp(s - s.max())
            out[t, h] = (w / w.sum()) @ v[h, : t + 1]
    return out.reshape(T, H * K)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
def test_causal_attention_is_grouped_query_attention(x64, heads, kv_heads):
    rng = np.random.default_rng(heads + kv_heads)
    T, K = 5, 3
    q = rng.normal(size=(heads, T, K))
    k, v = rng.normal(size=(2, kv_heads, T, K))
    got = jax.jit(causal_attention)(q, k, v)
    np.testing.assert_allclose(got, numpy_attention(q, k, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stacked", [False, True], ids=["per-layer", "stacked"])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2)])
def test_cached_attention_writes_its_slot_and_reads_one_causal_row(x64, stacked, heads, kv_heads):
    rng = np.random.default_rng(7)
    T, K, S = 6, 3, 9
    q = rng.normal(size=(heads, T, K))
    k, v = rng.normal(size=(2, kv_heads, T, K))
    parallel = causal_attention(q, k, v)
    shape = (2, kv_heads, S, K) if stacked else (kv_heads, S, K)
    keys, values = jnp.zeros(shape), jnp.zeros(shape)
    layer = jnp.int32(1) if stacked else None
    for t in range(T):
        y, keys, values = cached_attention(q[:, t], k[:, t], v[:, t], keys, values, jnp.int32(t), layer)
        np.testing.assert_allclose(y, parallel[t], rtol=1e-12, atol=1e-12)
    written = (keys[1], values[1]) if stacked else (keys, values)
    np.testing.assert_array_equal(written[0][:, :T], k)
    np.testing.assert_array_equal(written[1][:, :T], v)
    assert not np.any(written[0][:, T:])
    if stacked:
        assert not np.any(keys[0])  # the other layer is untouched


def tiny_llama(**changes):
    config = dict(vocab_size=9, context_length=8, num_layers=2, num_heads=4, num_kv_heads=2, embed_size=16,
                  mlp_size=12, bos_id=1)
    return llama.Model(llama.Config(**{**config, **changes}))


def test_both_families_are_cached_decoders():
    gpt = transformer.Model(transformer.Config(vocab_size=5, context_length=4, num_layers=2, num_heads=2, embed_size=8))
    lm = tiny_llama()
    for model in (gpt, lm):
        assert isinstance(model, CachedDecoder) and model.windowed_cache
        assert llama.Cache is transformer.Cache is Cache
    assert gpt.config.num_kv_heads == gpt.config.num_heads == 2
    # The cache layouts: a tuple of per-layer [G, S, K] arrays, or one [L, G, S, K] array for the scanned layers.
    cache, _ = gpt.initial(gpt.init(jax.random.key(0)))
    assert isinstance(cache.keys, tuple) and [a.shape for a in cache.keys] == [(2, 5, 4)] * 2
    cache, _ = lm.initial(lm.init(jax.random.key(0)))
    assert cache.keys.shape == (2, 2, 9, 4)
    assert lm.fit_cache(cache, 3).values.shape == (2, 2, 3, 4)


def test_llama_config_checks():
    assert tiny_llama(rope_base=500).config.rope_base == 500.0  # stored as a float (saved as JSON)
    assert tiny_llama(num_layers=np.int64(2)).config.num_layers.__class__ is int
    for field, value in [("num_layers", 0), ("mlp_size", 1.5), ("head_size", 0), ("rms_eps", 0.0),
                         ("rope_base", float("inf")), ("bos_id", 9), ("tie_embeddings", 1), ("dtype", "float16")]:
        with pytest.raises(ValueError, match=f"llama.Config.{field}"):
            tiny_llama(**{field: value})
    with pytest.raises(ValueError, match="`config` must be an epjax.llama.Config, got Config"):
        llama.Model(transformer.Config(vocab_size=5, context_length=4, num_layers=1, num_heads=1, embed_size=4))
    with jax.enable_x64(False), pytest.raises(ValueError, match="enable_x64"):
        tiny_llama(dtype="float64").init(jax.random.key(0))


def test_llama_saves_and_loads_through_epjax_train(tmp_path):
    model = tiny_llama(tie_embeddings=False, rope_base=1000.0).with_temperature(1.5)
    params = jax.tree.map(lambda a: a * 10, model.init(jax.random.key(2)))
    path = tmp_path / "llama.npz"
    epjax.train.save(path, model, params, extra={"note": "tiny"})
    loaded, loaded_params, extra = epjax.train.load(path)
    assert type(loaded) is llama.Model and loaded == model and loaded.temperature == 1.5
    assert loaded.bos_id == 1 and extra == {"note": "tiny"}
    jax.tree.map(np.testing.assert_array_equal, loaded_params, params)
    x = jnp.array([3, 0, 8, 2])
    np.testing.assert_array_equal(loaded.log_probs(loaded_params, x), model.log_probs(params, x))
    family = epjax.families.get("llama")
    assert family.model_class is llama.Model and family.build(model.config) == model.with_temperature(1.0)


def test_pretrained_keeps_the_old_llama_name():
    pytest.importorskip("tokenizers")
    from epjax import pretrained

    assert pretrained.llama is llama and llama.Model.family == "llama"
    assert not hasattr(pretrained, "_decoder") and _decoder.CachedDecoder is CachedDecoder


def test_llama_docstring_example():
    import doctest

    result = doctest.testmod(llama, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
