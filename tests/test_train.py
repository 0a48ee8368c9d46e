"""epjax.train: the loop learns a chain, save/load round trips for every family, validation and load errors."""

import importlib.util
import json

import jax
import numpy as np
import pytest

from epjax import markov, rnn, train
from epjax.experiments import markov_training as mt

HAS_TRANSFORMER = importlib.util.find_spec("epjax.transformer") is not None
HAS_SSM = importlib.util.find_spec("epjax.ssm") is not None

CHAIN = mt.make_chain()  # the default 4-token irreversible chain


@pytest.fixture(scope="module")
def chain_data():
    data = mt.sample_sequences(jax.random.key(0), CHAIN, 700, 8)
    return data[:500], data[500:]


def excess(model, params, held_out):
    """Model minus chain held-out loss on the same sequences (nats/token)."""
    ours = train.sequence_losses(model, params, held_out)
    chain = train.sequence_losses(CHAIN.model, CHAIN.params, held_out)
    return float(np.mean(ours - chain))


def test_training_approaches_the_chain(chain_data):
    """300 steps bring a tiny GRU's held-out loss from ~ln V to within 0.02 nats/token of the chain's own."""
    train_data, held_out = chain_data
    model, lr = rnn.Model(rnn.Config(4, hidden_size=8)), 2e-2
    params = model.init(jax.random.key(1))
    before = excess(model, params, held_out)
    config = train.TrainConfig(steps=300, batch_size=32, learning_rate=lr, warmup_steps=20, eval_every=150)
    params, history = train.train(jax.random.key(2), model, params, train_data, config=config, eval_data=held_out)
    after = excess(model, params, held_out)
    assert before > 0.1
    assert after < 0.02, (before, after)
    assert history.eval_steps.tolist() == [150, 300]
    assert history.eval_loss[-1] == pytest.approx(np.mean(train.sequence_losses(model, params, held_out)), abs=1e-5)
    assert history.train_loss.shape == (300,) and history.steps.tolist() == list(range(1, 301))
    # Towards l*(L) = [H(pi) + (L - 1) h] / L, the chain's expected loss: within sampling noise of the held-out set.
    assert history.eval_loss[-1] < CHAIN.optimal_loss(8) + 0.05


def test_callback_steps(chain_data):
    train_data, held_out = chain_data
    model = markov.MarkovChain(4)
    calls = []
    config = train.TrainConfig(steps=10, batch_size=4, warmup_steps=0, eval_every=4)
    _, history = train.train(
        jax.random.key(0), model, CHAIN.params, train_data, config=config, eval_data=held_out,
        callback=lambda step, p: calls.append(step), callback_every=3,
    )
    assert calls == [3, 6, 9, 10]
    assert history.eval_steps.tolist() == [4, 8, 10]


def family_cases():
    """(name, constructor) for one small model of every family that exists."""
    cases = [
        ("markov", lambda: markov.MarkovChain(4, temperature=1.5)),
        ("rnn", lambda: rnn.Model(rnn.Config(4, hidden_size=6, embed_size=5, num_layers=2), temperature=0.7)),
    ]
    if HAS_TRANSFORMER:
        from epjax import transformer

        tf_config = transformer.Config(4, context_length=8, num_layers=1, num_heads=2, embed_size=8)
        cases.append(("transformer", lambda: transformer.Model(tf_config)))
    if HAS_SSM:
        from epjax import ssm

        ssm_config = ssm.Config(4, kind="mamba", d_model=8, num_layers=1, d_state=4)
        cases.append(("ssm", lambda: ssm.Model(ssm_config)))
    return cases


@pytest.mark.parametrize(("name", "make"), family_cases(), ids=[c[0] for c in family_cases()])
def test_save_load_round_trip(tmp_path, name, make):
    model = make()
    # Random values of the right shapes (no initialiser is run), so a load that re-initialised would be caught.
    rng = np.random.default_rng(4)
    params = jax.tree_util.tree_map(
        lambda a: np.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), jax.eval_shape(model.init, jax.random.key(0))
    )
    path = tmp_path / "model.npz"
    train.save(path, model, params, extra={"note": name, "length": 8})
    loaded, loaded_params, extra = train.load(path)
    assert type(loaded) is type(model)
    assert train.model_spec(loaded) == train.model_spec(model)
    assert loaded.temperature == model.temperature
    assert extra == {"note": name, "length": 8}
    x = np.array([0, 3, 1, 1, 2, 0, 3, 2])
    # Equal specs build equal models; one compiled scorer then compares the parameters bit for bit.
    score = jax.jit(lambda p: loaded.log_probs(p, x))
    np.testing.assert_array_equal(np.asarray(score(loaded_params)), np.asarray(score(params)))


def rewrite(path, out, *, meta=None, drop=None, replace=None):
    """Copy an epjax .npz file with its metadata or arrays changed."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if meta is not None:
        current = json.loads(arrays["__epjax_meta__"].tobytes().decode())
        meta(current)
        arrays["__epjax_meta__"] = np.frombuffer(json.dumps(current).encode(), dtype=np.uint8)
    if drop is not None:
        del arrays[drop]
    if replace is not None:
        arrays.update(replace)
    np.savez(out, **arrays)
    return out


@pytest.fixture
def saved_chain(tmp_path):
    path = tmp_path / "chain.npz"
    train.save(path, CHAIN.model, CHAIN.params)
    return path


def test_load_errors(tmp_path, saved_chain):
    with pytest.raises(ValueError, match="does not exist"):
        train.load(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="not a readable epjax model file"):
        train.load(corrupt)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="has no epjax metadata"):
        train.load(plain)

    def family(name):
        return lambda meta: meta["model"].update(family=name)

    with pytest.raises(ValueError, match="unknown model family 'nosuch'"):
        train.load(rewrite(saved_chain, tmp_path / "a.npz", meta=family("nosuch")))
    with pytest.raises(ValueError, match="does not define Model and Config"):
        train.load(rewrite(saved_chain, tmp_path / "b.npz", meta=family("stats")))
    with pytest.raises(ValueError, match="must name a family"):
        train.load(rewrite(saved_chain, tmp_path / "c.npz", meta=family("../x")))
    with pytest.raises(ValueError, match="lacks parameter"):
        train.load(rewrite(saved_chain, tmp_path / "d.npz", drop=".log_transition"))
    with pytest.raises(ValueError, match="must have shape"):
        train.load(rewrite(saved_chain, tmp_path / "e.npz", replace={".log_transition": np.zeros((4, 3))}))
    # A file saved for another family's parameter tree does not load as this one.
    gru = rnn.Model(rnn.Config(4, hidden_size=4))
    other = tmp_path / "gru.npz"
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(gru.init, jax.random.key(0)))
    train.save(other, gru, zeros)
    as_chain = rewrite(other, tmp_path / "f.npz", meta=lambda m: m.update(model=train.model_spec(CHAIN.model)))
    with pytest.raises(ValueError, match="lacks parameter"):
        train.load(as_chain)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "`steps` must be an integer >= 1"),
        ("batch_size", 1.5, "`batch_size` must be an integer"),
        ("eval_every", 0, "`eval_every`"),
        ("warmup_steps", -1, "`warmup_steps` must be an integer >= 0"),
        ("learning_rate", 0.0, "`learning_rate` must be > 0"),
        ("learning_rate", float("nan"), "`learning_rate` must be > 0"),
        ("final_lr_fraction", 1.5, r"`final_lr_fraction` must be in \[0, 1\]"),
        ("weight_decay", -0.1, "`weight_decay` must be >= 0"),
        ("grad_clip", 0.0, "`grad_clip` must be > 0 or None"),
    ],
)
def test_train_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**{field: value})


def test_train_config_accepts_no_clipping():
    assert train.TrainConfig(grad_clip=None, warmup_steps=0).grad_clip is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros(8, np.int32), r"`data` must be an integer array of sequences \[N, T\]"),
        (np.zeros((0, 8), np.int32), r"`data` must be an integer array of sequences \[N, T\]"),
        (np.zeros((4, 8)), "`data` must hold integer token ids, got dtype float64"),
        (np.full((4, 8), 4), r"token ids in \[0, 4\), got values in \[4, 4\]"),
        (np.full((4, 8), -1), r"token ids in \[0, 4\)"),
    ],
)
def test_bad_data(data, message):
    model = CHAIN.model
    with pytest.raises(ValueError, match=message):
        train.train(jax.random.key(0), model, CHAIN.params, data, config=train.TrainConfig(steps=1))


def test_bad_arguments(chain_data):
    train_data, _ = chain_data
    model = CHAIN.model
    with pytest.raises(ValueError, match="`eval_data` must hold integer token ids"):
        train.train(jax.random.key(0), model, CHAIN.params, train_data, eval_data=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="`config` must be an epjax.train.TrainConfig"):
        train.train(jax.random.key(0), model, CHAIN.params, train_data, config={"steps": 3})
    with pytest.raises(ValueError, match="does not match the model's parameter tree|must have shape"):
        train.train(jax.random.key(0), markov.MarkovChain(3), CHAIN.params, train_data)
    with pytest.raises(ValueError, match="`callback_every`"):
        train.train(jax.random.key(0), model, CHAIN.params, train_data, callback=print, callback_every=0)
