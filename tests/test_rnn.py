"""Recurrent language models (epjax.rnn) against an independent NumPy implementation of the cell equations,
PyTorch's own recurrent layers, enumeration of all sequences and the EP identities (docs/mathematics.md §1-4)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import epjax
from epjax import rnn
from epjax.discrete import DiscreteModel

# --- the oracle: PyTorch's gate equations written out in NumPy (float64) ------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _np_cell(cell, w, h, c, x):
    """One step of layer weights ``w`` (kernels ``[in, G H]``) from state (h, c) on input x; PyTorch docs."""
    gx = x @ w["input"]["kernel"] + w["input"]["bias"]
    gh = h @ w["recurrent"]["kernel"] + w["recurrent"]["bias"]
    H = h.shape[0]
    if cell == "elman":  # h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
        return np.tanh(gx + gh), c
    if cell == "gru":
        r = _sigmoid(gx[:H] + gh[:H])
        z = _sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
        n = np.tanh(gx[2 * H :] + r * gh[2 * H :])  # b_hn inside the reset gate
        return (1.0 - z) * n + z * h, c
    i = _sigmoid(gx[:H] + gh[:H])
    f = _sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
    g = np.tanh(gx[2 * H : 3 * H] + gh[2 * H : 3 * H])
    o = _sigmoid(gx[3 * H :] + gh[3 * H :])
    c = f * c + i * g
    return o * np.tanh(c), c


def _np_weights(params):
    return jax.tree.map(lambda v: np.asarray(v, np.float64), nnx.to_pure_dict(params))


def _np_logits(config, params, x):
    """``[T, V]`` logits by a plain loop over time and layers."""
    w = _np_weights(params)
    H, L = config.hidden_size, config.num_layers
    h = [np.zeros(H) for _ in range(L)]
    c = [np.zeros(H) for _ in range(L)]
    rows = [w["head"]["bias"] + h[-1] @ w["head"]["kernel"]]
    for token in np.asarray(x)[:-1]:
        inp = w["embed"]["embedding"][token]
        for layer in range(L):
            h[layer], c[layer] = _np_cell(config.cell, w["layers"][layer], h[layer], c[layer], inp)
            inp = h[layer]
        rows.append(inp @ w["head"]["kernel"] + w["head"]["bias"])
    return np.stack(rows)


def _np_log_softmax(a):
    a = a - a.max(axis=-1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=-1, keepdims=True))


def _np_log_probs(config, params, x, temperature=1.0):
    table = _np_log_softmax(_np_logits(config, params, x) / temperature)
    return table[np.arange(len(x)), np.asarray(x)]


# --- problems -----------------------------------------------------------------------------------------------


@functools.cache
def _model(config: rnn.Config) -> rnn.Model:
    # One model object per configuration, so jitted functions with the model static compile once.
    return rnn.Model(config)


def _make(seed, *, cell="gru", vocab_size=5, hidden_size=6, embed_size=4, num_layers=2, scale=0.5):
    """A model and generic random parameters (all nonzero: a non-uniform initial law, b_hn in play).

    Parameters are drawn with NumPy into the abstract tree of ``init`` (no compiled initialisers; ``init``
    itself is tested separately).
    """
    dtype = "float64" if jax.config.jax_enable_x64 else "float32"
    config = rnn.Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        embed_size=embed_size,
        num_layers=num_layers,
        cell=cell,
        dtype=dtype,
    )
    model = _model(config)
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), abstract)
    return model, params


# Sampling compiled once per model object. Scoring needs no wrapper: Model.logits is jitted per Config.
_sample = jax.jit(
    lambda model, key, params, n: model.sample_with_log_probs(key, params, n), static_argnums=(0, 3)
)


def _tokens(seed, T, V):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, size=T), dtype=jnp.int32)


CASES = [
    # L=1 with T < V projects the embeddings; L=2 with T >= V gathers a projected vocabulary table.
    dict(cell=cell, num_layers=num_layers, T=T)
    for cell in rnn.CELLS
    for num_layers, T in ((1, 3), (2, 9))
]


# --- scoring against the oracles ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['cell']}-L{c['num_layers']}-T{c['T']}")
def test_log_probs_match_numpy_oracle_float64(x64, case):
    model, params = _make(3, cell=case["cell"], num_layers=case["num_layers"])
    x = _tokens(case["T"], case["T"], model.vocab_size)
    got = model.log_probs(params, x)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, _np_log_probs(model.config, params, x), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_log_probs_match_numpy_oracle_float32(cell):
    model, params = _make(4, cell=cell)
    x = _tokens(0, 12, model.vocab_size)
    got = model.log_probs(params, x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, _np_log_probs(model.config, params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_fast_logits_equal_step_loop(x64, cell):
    """The layer-wise scans equal the one-token ``step`` called in a Python loop (and the base-class scan)."""
    model, params = _make(5, cell=cell)
    x = _tokens(1, 9, model.vocab_size)
    step = jax.jit(model.step)
    carry, logits = model.initial(params)
    rows = [logits]
    for t, token in enumerate(x[:-1]):
        carry, logits = step(params, carry, token, t)
        rows.append(logits)
    fast = model.logits(params, x)
    np.testing.assert_allclose(fast, jnp.stack(rows), rtol=1e-12, atol=1e-12)
    slow = jax.jit(DiscreteModel.logits, static_argnums=0)(model, params, x)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_matches_torch_recurrent_layers(x64, cell):
    """Weights copied into torch.nn.RNN/GRU/LSTM give the same logits: the gate equations are PyTorch's."""
    torch = pytest.importorskip("torch")
    model, params = _make(6, cell=cell)
    w = _np_weights(params)
    layer_class = {"elman": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    net = layer_class(4, 6, num_layers=2, dtype=torch.float64)
    x = np.asarray(_tokens(2, 9, model.vocab_size))
    with torch.no_grad():
        for layer in range(2):
            for ours, theirs in (("input", "ih"), ("recurrent", "hh")):
                linear = w["layers"][layer][ours]
                getattr(net, f"weight_{theirs}_l{layer}").copy_(torch.tensor(linear["kernel"].T))
                getattr(net, f"bias_{theirs}_l{layer}").copy_(torch.tensor(linear["bias"]))
        hs, _ = net(torch.tensor(w["embed"]["embedding"][x[:-1]]))
    hs = np.concatenate([np.zeros((1, 6)), hs.numpy()])
    want = hs @ w["head"]["kernel"] + w["head"]["bias"]
    np.testing.assert_allclose(model.logits(params, jnp.asarray(x)), want, rtol=1e-10, atol=1e-12)


def test_first_token_law_is_softmax_of_readout_bias(x64):
    model, params = _make(7, cell="lstm")
    carry, logits = model.initial(params)
    np.testing.assert_array_equal(logits, params["head"]["bias"][...])
    assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(carry))
    x = _tokens(3, 9, model.vocab_size)
    np.testing.assert_allclose(
        model.log_probs(params, x)[0], jax.nn.log_softmax(params["head"]["bias"][...])[x[0]], rtol=1e-14
    )


# --- normalisation and EP identities ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_probabilities_sum_to_one_over_all_sequences(x64, cell):
    model, params = _make(8, cell=cell, vocab_size=3, hidden_size=4, embed_size=3)
    x = jnp.asarray(list(itertools.product(range(3), repeat=5)), dtype=jnp.int32)
    log_p = jax.jit(jax.vmap(lambda s: jnp.sum(model.log_probs(params, s))))(x)
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_sigma_is_odd_under_reversal(x64, cell):
    model, params = _make(9, cell=cell)
    sigma = jax.jit(epjax.sigma, static_argnums=(0, 3))
    for seed in range(3):
        x = _tokens(seed, 9, model.vocab_size)
        s = sigma(model, params, x, epjax.reverse_tokens)
        assert abs(float(s)) > 1e-3  # a generic RNN is irreversible
        np.testing.assert_allclose(s, -sigma(model, params, x[::-1], epjax.reverse_tokens), rtol=1e-12)
        manual = np.sum(_np_log_probs(model.config, params, x)) - np.sum(
            _np_log_probs(model.config, params, x[::-1])
        )
        np.testing.assert_allclose(s, manual, rtol=1e-10)


@pytest.mark.parametrize(
    "reversal", [epjax.reverse_tokens, functools.partial(epjax.reverse_blocks, block_size=2)], ids=["tokens", "blocks"]
)
@pytest.mark.parametrize("cell", rnn.CELLS)
def test_monte_carlo_agrees_with_enumeration(x64, cell, reversal):
    model, params = _make(10, cell=cell, vocab_size=3, hidden_size=4, embed_size=3, num_layers=1, scale=1.0)
    exact = epjax.exact_entropy_production(model, params, num_steps=6, reversal=reversal)
    assert exact > 1e-2
    est = epjax.entropy_production(
        jax.random.key(0), model, params, num_steps=6, num_samples=4000, reversal=reversal, batch_size=4000
    )
    assert abs(float(est.mean) - exact) < 4 * float(est.stderr), (float(est.mean), float(est.stderr), exact)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_sample_with_log_probs_matches_scoring(cell):
    model, params = _make(11, cell=cell)
    x, log_p = _sample(model, jax.random.key(1), params, 12)
    assert x.shape == (12,) and x.dtype == jnp.int32
    assert int(x.min()) >= 0 and int(x.max()) < model.vocab_size
    np.testing.assert_allclose(log_p, model.log_probs(params, x), rtol=1e-5, atol=1e-5)


class _PlainDecoding(rnn.Model):
    """The sampler without the vocabulary table: ``step`` projects each token's embedding."""

    def decoding_params(self, params, num_steps):
        return params


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_sampling_with_the_vocabulary_table_equals_projecting_each_token(x64, cell):
    model, params = _make(13, cell=cell)
    table = model.decoding_params(params, model.vocab_size)
    assert isinstance(table, rnn.DecodingParams) and table.params is params
    embedding, first = params["embed"]["embedding"][...], params["layers"][0]["input"]
    want = np.asarray(embedding) @ np.asarray(first["kernel"][...]) + np.asarray(first["bias"][...])
    np.testing.assert_allclose(table.input_table, want, rtol=1e-13, atol=1e-14)
    assert model.decoding_params(params, model.vocab_size - 1) is params  # too short to pay for the table
    plain = _PlainDecoding(model.config)
    for num_steps in (4, 12):  # without and with the table
        x, log_p = _sample(model, jax.random.key(2), params, num_steps)
        x_plain, log_p_plain = _sample(plain, jax.random.key(2), params, num_steps)
        np.testing.assert_array_equal(x, x_plain)
        np.testing.assert_allclose(log_p, log_p_plain, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(log_p, model.log_probs(params, x), rtol=1e-12, atol=1e-12)


def test_vmap_jit_batch_equals_one_by_one():
    model, params = _make(12, cell="gru")
    x = jnp.stack([_tokens(s, 12, model.vocab_size) for s in range(4)])
    batched = jax.jit(jax.vmap(model.log_probs, in_axes=(None, 0)))(params, x)
    for row, seq in zip(batched, x, strict=True):
        np.testing.assert_allclose(row, model.log_probs(params, seq), rtol=1e-5, atol=1e-6)


# --- temperature ----------------------------------------------------------------------------------------


def test_temperature_divides_the_logits(x64):
    model, params = _make(13, cell="lstm")
    x = _tokens(4, 9, model.vocab_size)
    for tau in (0.5, 3.0):
        hot = model.with_temperature(tau)
        assert hot.temperature == tau and model.temperature == 1.0
        assert rnn.Model(model.config, temperature=tau).temperature == tau
        want = _np_log_probs(model.config, params, x, tau)
        np.testing.assert_allclose(hot.log_probs(params, x), want, rtol=1e-11)
    xs, log_p = _sample(hot, jax.random.key(2), params, 9)
    np.testing.assert_allclose(log_p, _np_log_probs(model.config, params, xs, tau), rtol=1e-11)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), "hot"])
def test_non_positive_temperature_is_refused(tau):
    model = rnn.Model(rnn.Config(vocab_size=3, hidden_size=4))
    with pytest.raises(ValueError, match="temperature"):
        model.with_temperature(tau)
    with pytest.raises(ValueError, match="temperature"):
        rnn.Model(model.config, temperature=tau)


# --- configuration, initialisation and validation ----------------------------------------------------------


def test_config_defaults_and_round_trip():
    config = rnn.Config(vocab_size=7, hidden_size=5, cell="lstm", num_layers=3)
    assert config.embed_size == 5  # None means hidden_size
    again = rnn.Config(**config.to_dict())
    assert again == config and hash(again) == hash(config)
    model = rnn.Model(again)
    assert model.family == "rnn" and model.vocab_size == 7 and model.config is again
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    assert rnn.num_parameters(abstract) == 7 * 5 + 3 * 2 * (5 * 20 + 20) + 5 * 7 + 7


def test_init_gives_a_flax_network_with_the_documented_start():
    model = rnn.Model(rnn.Config(vocab_size=3, hidden_size=4, embed_size=2, cell="lstm"))
    params = model.init(jax.random.key(0))
    model.check_params(params)
    network = nnx.merge(model.graphdef, params)  # the graphdef rebuilds the flax module around the state
    assert isinstance(network, rnn.Network) and len(network.layers) == 1
    layer = params["layers"][0]
    # Forget-gate bias 1, other biases 0; one orthogonal recurrent block per gate.
    np.testing.assert_array_equal(layer["input"]["bias"][...], np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    np.testing.assert_array_equal(layer["recurrent"]["bias"][...], np.zeros(16))
    kernel = np.asarray(layer["recurrent"]["kernel"][...])
    for g in range(4):
        block = kernel[:, 4 * g : 4 * (g + 1)]
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5)
    # Fresh parameters score sequences.
    assert np.all(np.isfinite(model.log_probs(params, jnp.array([0, 2, 1]))))


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("vocab_size", 2.5),
        ("hidden_size", -1),
        ("embed_size", 0),
        ("num_layers", 0),
        ("cell", "rnn"),
        ("dtype", "float16"),
    ],
)
def test_bad_config_is_refused(field, value):
    kwargs = dict(vocab_size=3, hidden_size=4)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        rnn.Config(**kwargs)


def test_model_needs_a_config():
    with pytest.raises(ValueError, match="config"):
        rnn.Model({"vocab_size": 3})


def test_float64_model_outside_x64_is_refused_at_init():
    model = rnn.Model(rnn.Config(vocab_size=3, hidden_size=4, dtype="float64"))  # constructing is fine
    with pytest.raises(ValueError, match="float64"):
        model.init(jax.random.key(0))


def test_float64_params_give_float64_outputs(x64):
    model, params = _make(14, cell="gru")
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
    assert model.logits(params, _tokens(5, 9, model.vocab_size)).dtype == jnp.float64
    assert _sample(model, jax.random.key(0), params, 12)[1].dtype == jnp.float64


@pytest.mark.parametrize(
    "x, match",
    [
        (jnp.array([0, 1, 5]), r"\[0, 5\)"),
        (jnp.array([0, -1, 2]), r"\[0, 5\)"),
        (jnp.array([0.0, 1.0]), "integer"),
        (jnp.array([[0, 1]]), "1-D"),
        (jnp.zeros((0,), jnp.int32), "at least one"),
    ],
)
def test_bad_tokens_are_refused(x, match):
    model, params = _make(15)
    with pytest.raises(ValueError, match=match):
        model.log_probs(params, x)


def test_wrong_parameter_tree_is_refused():
    model, params = _make(16, cell="gru", hidden_size=6)
    x = jnp.array([0, 1])
    _, wider = _make(16, cell="gru", hidden_size=7)
    with pytest.raises(ValueError, match="shape"):
        model.log_probs(wider, x)
    _, lstm = _make(16, cell="lstm", hidden_size=6)
    with pytest.raises(ValueError, match="shape"):  # same names, four gate blocks instead of three
        model.log_probs(lstm, x)
    _, shallow = _make(16, cell="gru", hidden_size=6, num_layers=1)
    with pytest.raises(ValueError, match="missing"):
        model.log_probs(shallow, x)
    with pytest.raises(ValueError, match="parameter tree"):
        model.log_probs({"head": params["head"]}, x)


def test_gradients_flow_to_every_parameter():
    model, params = _make(17, cell="gru")
    x = _tokens(6, 12, model.vocab_size)
    grads = jax.jit(jax.grad(lambda p: -jnp.sum(model.log_probs(p, x))))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)) and np.any(g != 0)
