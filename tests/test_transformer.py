"""GPT-style Transformer family: KV-cache decoding vs the parallel causal pass, an independent numpy forward
pass, normalisation, exact vs Monte Carlo EP, temperature and boundary validation (docs/mathematics.md §1-4)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import epjax
from epjax import transformer
from epjax.discrete import DiscreteModel, decode_windows, fit_slots

TINY = dict(vocab_size=3, context_length=6, num_layers=2, num_heads=2, embed_size=8)


def make_model(dtype="float64", **changes):
    return transformer.Model(transformer.Config(**{**TINY, "dtype": dtype, **changes}))


# Built once: a model is a static jit argument (hashed by identity), so sharing them shares compilations.
TIED = make_model()
UNTIED = make_model(tie_embeddings=False)
FLOAT32 = make_model("float32")


def random_params(model, seed, scale=1.0):
    """Every parameter i.i.d. N(0, scale^2): far from the near-uniform GPT-2 init, so the EP is not ~0.

    Drawn with numpy: compiling a JAX random draw for each of the ~30 parameter shapes would take longer
    than the tests themselves.
    """
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda a: jnp.asarray(scale * rng.normal(size=a.shape), a.dtype), abstract)


@functools.partial(jax.jit, static_argnums=0)
def score(model, params, x):
    return model.log_probs(params, x)


# --- an independent numpy forward pass: loops over layers, heads and query positions -----------------------


def _np_layer_norm(p, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def numpy_logits(model, params, x):
    """[T, V] logits: row t from (BOS, x_1..x_t); causality by slicing each query's visible keys."""
    cfg = model.config
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(params))
    D, H = cfg.embed_size, cfg.num_heads
    K = D // H
    x = np.asarray(x)
    T = len(x)
    inputs = [P["bos"]] + [P["token_embed"]["embedding"][token] for token in x[:-1]]
    z = np.stack(inputs) + P["position_embed"][:T]
    for layer in range(cfg.num_layers):
        blk = P["blocks"][layer]
        u = _np_layer_norm(blk["ln_1"], z)
        qkv = u @ blk["attn"]["qkv"]["kernel"] + blk["attn"]["qkv"]["bias"]
        q, k, v = qkv[:, :D], qkv[:, D : 2 * D], qkv[:, 2 * D :]
        heads = np.zeros((T, D))
        for h in range(H):
            cols = slice(h * K, (h + 1) * K)
            for t in range(T):
                s = k[: t + 1, cols] @ q[t, cols] / np.sqrt(K)
                w = np.exp(s - s.max())
                heads[t, cols] = (w / w.sum()) @ v[: t + 1, cols]
        z = z + heads @ blk["attn"]["out"]["kernel"] + blk["attn"]["out"]["bias"]
        u = _np_layer_norm(blk["ln_2"], z)
        hidden = _np_gelu(u @ blk["mlp"]["fc"]["kernel"] + blk["mlp"]["fc"]["bias"])
        z = z + hidden @ blk["mlp"]["proj"]["kernel"] + blk["mlp"]["proj"]["bias"]
    u = _np_layer_norm(P["ln_f"], z)
    return u @ P["token_embed"]["embedding"].T if cfg.tie_embeddings else u @ P["head"]["kernel"]


def _np_log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


# --- the fast paths against their slow twins ----------------------------------------------------------------


@pytest.mark.parametrize("model", [TIED, UNTIED], ids=["tied", "untied"])
def test_kv_cache_decoding_equals_parallel_causal_pass(x64, model):
    params = random_params(model, 0)
    x = jnp.array([1, 2, 2, 0, 1, 0])  # T = context_length
    parallel = jax.jit(model.logits)(params, x)

    step = jax.jit(model.step)
    carry, first = jax.jit(model.initial)(params)
    rows = [first]
    for t in range(len(x) - 1):  # token by token through the fixed-size cache
        carry, row = step(params, carry, x[t], t)
        rows.append(row)
    np.testing.assert_allclose(np.stack(rows), parallel, rtol=1e-11, atol=1e-11)
    assert len(carry.keys) == 2 and carry.keys[0].shape == (2, 7, 4)  # per layer [H, context_length + 1, K]

    scanned = jax.jit(DiscreteModel.logits, static_argnums=0)(model, params, x)  # the base's scan of step
    np.testing.assert_allclose(scanned, parallel, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("model", [TIED, UNTIED], ids=["tied", "untied"])
def test_log_probs_match_numpy_forward_pass(x64, model):
    params = random_params(model, 1)
    for x in ([2], [0, 2, 1], [2, 1, 1, 0, 2, 2]):
        x = np.array(x)
        want = _np_log_softmax(numpy_logits(model, params, x))[np.arange(len(x)), x]
        np.testing.assert_allclose(score(model, params, jnp.asarray(x)), want, rtol=1e-11, atol=1e-11)


def test_float32_fast_path_matches_float64_oracle():
    params = random_params(FLOAT32, 2, 0.5)
    x = np.array([2, 0, 0, 2, 1, 1])
    got = score(FLOAT32, params, jnp.asarray(x))
    assert got.dtype == jnp.float32
    want = _np_log_softmax(numpy_logits(FLOAT32, params, x))[np.arange(len(x)), x]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_probabilities_sum_to_one(x64):
    params = random_params(TIED, 3)
    x = jnp.array(list(itertools.product(range(3), repeat=5)))
    log_p = jax.jit(jax.vmap(lambda s: jnp.sum(TIED.log_probs(params, s))))(x)
    assert log_p.dtype == jnp.float64
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p)), 1.0, rtol=1e-12)


def test_sigma_reversal_identity(x64):
    params = random_params(TIED, 4)
    x = jnp.array([0, 2, 2, 1, 0, 1])
    for reversal in (epjax.reverse_tokens, functools.partial(epjax.reverse_blocks, block_size=2)):
        sigma = jax.jit(lambda y, reversal=reversal: epjax.sigma(TIED, params, y, reversal))
        forward, backward = sigma(x), sigma(reversal(x))
        assert abs(float(forward)) > 1e-3
        np.testing.assert_allclose(forward, -backward, rtol=1e-12)


@pytest.mark.parametrize("block_size", [1, 2])
def test_exact_ep_agrees_with_monte_carlo(x64, block_size):
    params = random_params(TIED, 5)
    reversal = functools.partial(epjax.reverse_blocks, block_size=block_size)
    exact = epjax.exact_entropy_production(TIED, params, num_steps=6, reversal=reversal, chunk_size=729)
    est = epjax.entropy_production(
        jax.random.key(block_size), TIED, params, num_steps=6, num_samples=4000, reversal=reversal
    )
    assert exact > 0.01
    assert abs(est.mean - exact) < 4 * est.stderr, (est, exact)


def test_sample_with_log_probs_scores_its_sample(x64):
    params = random_params(TIED, 6)
    keys = jax.random.split(jax.random.key(0), 8)
    # num_steps = context_length: the decoder's last step writes cache slot context_length.
    x, log_p = jax.jit(jax.vmap(lambda k: TIED.sample_with_log_probs(k, params, 6)))(keys)
    assert x.dtype == jnp.int32 and x.shape == (8, 6)
    np.testing.assert_allclose(log_p, jax.vmap(score, in_axes=(None, None, 0))(TIED, params, x), rtol=1e-11)


def single_scan(model):
    """The same model sampling in one scan over its full-size cache (the sampler before windowing)."""
    clone = model.with_temperature(model.temperature)
    clone.windowed_cache = False
    return clone


@pytest.mark.parametrize("num_steps", [130, 200])
def test_windowed_sampling_equals_one_scan_over_the_full_cache(x64, num_steps):
    # context 200, T = 130 / 200: two / three windows (decode_windows), the last one shorter than the context
    # or equal to it; the one-scan sampler attends to all 201 slots at every step.
    model = make_model(context_length=200)
    assert len(decode_windows(num_steps)) == num_steps // 64
    params = random_params(model, 11)
    keys = jax.random.split(jax.random.key(3), 3)
    sample = lambda m: jax.jit(jax.vmap(lambda k: m.sample_with_log_probs(k, params, num_steps)))(keys)
    x, log_p = sample(model)
    x_one, log_p_one = sample(single_scan(model))
    np.testing.assert_array_equal(x, x_one)  # the same random stream, the same laws: the same tokens
    np.testing.assert_allclose(log_p, log_p_one, rtol=0, atol=1e-12)
    np.testing.assert_allclose(log_p, jax.vmap(score, in_axes=(None, None, 0))(model, params, x), atol=1e-11)


def test_fit_cache_cuts_and_pads_the_slot_axis(x64):
    params = random_params(TIED, 12)
    cache, _ = TIED.initial(params)  # context 6: 7 slots, BOS written in slot 0
    cut = TIED.fit_cache(cache, 2)
    assert all(a.shape == (2, 2, 4) for a in cut.keys + cut.values)
    grown = TIED.fit_cache(cut, 5)
    assert all(a.shape == (2, 5, 4) for a in grown.keys + grown.values)
    for full, g in zip(cache.keys + cache.values, grown.keys + grown.values, strict=True):
        np.testing.assert_array_equal(g[:, :2], full[:, :2])
        assert not np.any(g[:, 2:]) and np.any(g[:, 0])


def test_decode_windows():
    assert decode_windows(1) == (1,)
    assert decode_windows(127) == (127,)
    assert decode_windows(128) == (64, 128)
    assert decode_windows(257) == (64, 128, 192, 257)
    assert decode_windows(4096) == (1024, 2048, 3072, 4096)  # at most four compiled scans
    for T in range(1, 600, 7):
        ends = decode_windows(T)
        assert ends[-1] == T and all(b > a for a, b in zip((0,) + ends, ends, strict=False))


def test_fit_slots():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(fit_slots(x, 1, 2), x[:, :2])
    padded = fit_slots(x, 1, 5)
    assert padded.shape == (2, 5, 4)
    np.testing.assert_array_equal(padded[:, :3], x)
    assert not np.any(padded[:, 3:])
    np.testing.assert_array_equal(fit_slots(x, 1, 3), x)


def test_temperature_divides_the_logits(x64):
    params = random_params(TIED, 7)
    x = np.array([1, 2, 0, 0, 2])
    tau = 2.5
    hot = TIED.with_temperature(tau)
    want = _np_log_softmax(numpy_logits(TIED, params, x) / tau)[np.arange(len(x)), x]
    np.testing.assert_allclose(score(hot, params, jnp.asarray(x)), want, rtol=1e-11)
    assert hot.config == TIED.config and TIED.temperature == 1.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            TIED.with_temperature(bad)
        with pytest.raises(ValueError, match="temperature"):
            transformer.Model(TIED.config, temperature=bad)


# --- boundary validation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def params32():
    return random_params(FLOAT32, 0, 0.02)


def test_bad_tokens_are_refused(params32):
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        FLOAT32.log_probs(params32, jnp.array([0, 3, 1]))
    with pytest.raises(ValueError, match="integer"):
        FLOAT32.log_probs(params32, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        FLOAT32.log_probs(params32, jnp.zeros((2, 3), jnp.int32))


def test_sequences_longer_than_the_context_are_refused(params32):
    x = jnp.zeros(7, jnp.int32)
    with pytest.raises(ValueError, match="context of 6"):
        FLOAT32.log_probs(params32, x)
    with pytest.raises(ValueError, match="context of 6"):
        FLOAT32.logits(params32, x)
    with pytest.raises(ValueError, match="context of 6"):
        FLOAT32.sample(jax.random.key(0), params32, 7)
    with pytest.raises(ValueError, match="context of 6"):
        epjax.entropy_production(jax.random.key(0), FLOAT32, params32, num_steps=7, num_samples=4)
    assert FLOAT32.max_length == 6


def test_wrong_parameter_tree_is_refused(params32):
    for changes in ({"embed_size": 16}, {"tie_embeddings": False}, {"num_layers": 1}, {"context_length": 7}):
        other = make_model("float32", **changes)
        wrong = jax.eval_shape(other.init, jax.random.key(0))  # shapes are all the check needs
        with pytest.raises(ValueError, match="params"):
            FLOAT32.log_probs(wrong, jnp.array([0, 1]))
        with pytest.raises(ValueError, match="params"):
            FLOAT32.sample(jax.random.key(0), wrong, 2)


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("vocab_size", 2.0),
        ("vocab_size", True),
        ("context_length", 0),
        ("num_layers", 0),
        ("num_heads", 0),
        ("embed_size", -8),
        ("embed_size", 10),
        ("mlp_ratio", 0),
        ("mlp_ratio", 1.5),
        ("tie_embeddings", "yes"),
        ("dtype", "float16"),
    ],
)
def test_bad_config_is_refused(field, value):
    kwargs = dict(TINY, num_heads=4)
    kwargs[field] = value
    with pytest.raises(ValueError, match=f"Config.{field}"):
        transformer.Config(**kwargs)


def test_float64_params_need_x64():
    with jax.enable_x64(False), pytest.raises(ValueError, match="enable_x64"):
        TIED.init(jax.random.key(0))


# --- what a training/saving module relies on ---------------------------------------------------------------


def test_config_round_trip_and_nnx_module(params32):
    model = make_model("float32", tie_embeddings=False, mlp_ratio=2)
    rebuilt = transformer.Model(model.config.to_dict())
    assert rebuilt.config == model.config and transformer.Model.family == "transformer"
    assert rebuilt.vocab_size == 3 and rebuilt.max_length == 6
    assert "tie_embeddings=False" in repr(model)
    abstract = jax.eval_shape(FLOAT32.init, jax.random.key(0))  # init itself runs in the module's doctest
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    module = FLOAT32.module(params32)
    assert isinstance(module, transformer.GPT)
    for a, b in zip(jax.tree.leaves(nnx.state(module)), jax.tree.leaves(params32), strict=True):
        np.testing.assert_array_equal(a, b)
