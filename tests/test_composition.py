"""EP inside a user's JAX code: the traceable cores, gradients of every estimator, and the engine's own checks.

Oracles: the host drivers (same key, same trajectories), central finite differences in float64 for every exact
gradient, and exact gradients for the Monte Carlo gradient estimators (within 4 standard errors).
"""

import functools
import pickle

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_engine import CHAIN, chain_params
from test_errors import Coin

import epjax
from epjax import _batching, kalman, markov, rnn, ssm, transformer
from epjax import decomposition as dec

V = 3
T = 4


def chain(seed: int):
    """A first-order chain with random logits (softmax rows: normalised for every parameter value)."""
    rng = np.random.default_rng(seed)
    return markov.Params(jnp.asarray(rng.normal(size=V)), jnp.asarray(rng.normal(size=(V, V))))


MODEL = markov.MarkovChain(V)


def finite_differences(f, params, h=1e-6):
    """Central differences of the scalar ``f`` with respect to every entry of every leaf of ``params``."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    grads = []
    for i, leaf in enumerate(leaves):
        leaf = np.asarray(leaf, dtype=np.float64)
        g = np.zeros_like(leaf)
        for j in np.ndindex(leaf.shape):
            plus, minus = leaf.copy(), leaf.copy()
            plus[j] += h
            minus[j] -= h
            at = lambda x, i=i: jax.tree_util.tree_unflatten(tree, leaves[:i] + [jnp.asarray(x)] + leaves[i + 1 :])
            g[j] = (float(f(at(plus))) - float(f(at(minus)))) / (2 * h)
        grads.append(g)
    return jax.tree_util.tree_unflatten(tree, grads)


def assert_trees_close(a, b, **tol):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol), a, b)


# ---------------------------------------------------------------------------------------------------------
# the traceable Monte Carlo core


def test_sample_sigmas_are_the_drivers_sigmas(x64):
    p = chain(0)
    est = epjax.entropy_production(jax.random.key(3), MODEL, p, num_steps=6, num_samples=300, batch_size=64)
    for batch_size in (None, 7):
        s = jax.jit(lambda q, b=batch_size: epjax.sample_sigmas(jax.random.key(3), MODEL, q, num_steps=6,
                                                                num_samples=300, batch_size=b))(p)
        np.testing.assert_allclose(np.asarray(s), est.sigmas, rtol=1e-13, atol=1e-13)
    pure = epjax.summarize(jnp.asarray(est.sigmas))
    for field in ("mean", "stderr", "ci_low", "ci_high", "mean_exp_neg_sigma", "exp_neg_sigma_stderr",
                  "fraction_negative", "running_mean"):
        np.testing.assert_allclose(np.asarray(getattr(pure, field)), getattr(est, field), rtol=1e-12)


def test_entropy_production_inside_jit_and_vmap(x64):
    # The driver falls back to the pure core when its arguments are traced: same numbers, as arrays.
    ps = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), chain(0), chain(1))
    run = jax.jit(jax.vmap(lambda q: epjax.entropy_production(jax.random.key(1), MODEL, q, num_steps=5,
                                                              num_samples=200).mean))
    means = run(ps)
    for i, seed in enumerate((0, 1)):
        host = epjax.entropy_production(jax.random.key(1), MODEL, chain(seed), num_steps=5, num_samples=200)
        assert float(means[i]) == pytest.approx(host.mean, rel=1e-12)


def test_kalman_sample_sigmas_in_jit_vmap_over_parameters(x64):
    p = kalman.example("2d")
    scaled = jax.vmap(lambda a: p._replace(A=a * p.A))(jnp.array([0.5, 1.0]))
    run = jax.jit(jax.vmap(lambda q: epjax.summarize(epjax.sample_sigmas(
        jax.random.key(0), kalman.model, q, num_steps=10, num_samples=4000)).mean))
    means = run(scaled)
    for i, a in enumerate((0.5, 1.0)):
        exact = float(kalman.entropy_production(p._replace(A=a * p.A), 10, method="dense"))
        host = epjax.entropy_production(jax.random.key(0), kalman.model, p._replace(A=a * p.A), num_steps=10,
                                        num_samples=4000)
        assert float(means[i]) == pytest.approx(host.mean, rel=1e-10)
        assert abs(host.mean - exact) < 4 * host.stderr


def test_jit_vmap_grad_of_a_user_loss_with_the_monte_carlo_core(x64):
    keys = jax.random.split(jax.random.key(0), 3)

    def loss(q, key):
        ep = epjax.entropy_production_surrogate(key, MODEL, q, num_steps=T, num_samples=500)
        return (ep - 0.5) ** 2 + 0.01 * jnp.sum(q.log_transition**2)

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(chain(2), keys)
    assert grads.log_transition.shape == (3, V, V)
    assert np.all(np.isfinite(np.asarray(grads.log_transition)))
    # Kalman, pathwise through the reparameterised sampler, differentiated with respect to the matrices.
    p = kalman.example("2d")
    kal = lambda q, key: epjax.entropy_production_surrogate(key, kalman.model, q, num_steps=6, num_samples=64)
    g = jax.jit(jax.vmap(jax.grad(kal), in_axes=(None, 0)))(p, keys)
    assert g.A.shape == (3, 2, 2) and np.all(np.isfinite(np.asarray(g.K)))


# ---------------------------------------------------------------------------------------------------------
# exact gradients against finite differences (float64)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_enumeration_gradient(x64, seed):
    p = chain(seed)
    reversal = functools.partial(epjax.reverse_blocks, block_size=2)
    f = lambda q: epjax.exact_entropy_production(MODEL, q, num_steps=T, reversal=reversal)
    g = jax.grad(f)(p)
    assert_trees_close(g, finite_differences(f, p), rtol=1e-6, atol=1e-8)
    # The traced path (inside jit) and the host path agree on the value too.
    assert float(jax.jit(f)(p)) == pytest.approx(float(f(p)), rel=1e-13)
    # The chain's closed form (its marginals) is an independent oracle of the value and its gradient.
    closed = lambda q: markov.entropy_production(q, T)
    g_tokens = jax.grad(lambda q: epjax.exact_entropy_production(MODEL, q, num_steps=T))(p)
    assert_trees_close(g_tokens, jax.grad(closed)(p), rtol=1e-10, atol=1e-12)


def test_exact_decomposition_gradient_and_traced_value(x64):
    gru = rnn.Model(rnn.Config(vocab_size=2, hidden_size=3, cell="gru", dtype="float64"))
    p = gru.init(jax.random.key(0))
    host = dec.exact_decomposition(gru, p, num_steps=5)
    traced = jax.jit(lambda q: dec.exact_decomposition(gru, q, num_steps=5))(p)
    for field in ("D", "L", "M", "forward_information", "backward_information"):
        np.testing.assert_allclose(getattr(traced, field), getattr(host, field), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(float(host.total), float(epjax.exact_entropy_production(gru, p, num_steps=5)),
                               rtol=1e-11)
    # Markov chain: L = 0 exactly (the last token is a sufficient backward summary), so M carries the gradient.
    q = chain(3)
    for name in ("D", "M", "backward_information"):
        f = jax.jit(lambda r, name=name: jnp.sum(getattr(dec.exact_decomposition(MODEL, r, num_steps=T), name)))
        assert_trees_close(jax.grad(f)(q), finite_differences(f, q), rtol=1e-6, atol=1e-8)
    # One GRU weight matrix, against finite differences of one per-step term.
    kernel = p["layers"][0]["recurrent"]["kernel"][...]

    def with_kernel(k):
        q = jax.tree_util.tree_map(lambda a: a, p)
        q["layers"][0]["recurrent"]["kernel"][...] = k
        return q

    f = jax.jit(lambda k: dec.exact_decomposition(gru, with_kernel(k), num_steps=4).D[1])
    np.testing.assert_allclose(np.asarray(jax.grad(f)(kernel)), finite_differences(f, kernel), rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------
# Monte Carlo gradients against exact gradients


@pytest.mark.parametrize("seed", [0, 1])
def test_score_function_gradient_within_4_standard_errors(x64, seed):
    p = chain(seed)
    exact = jax.grad(lambda q: epjax.exact_entropy_production(MODEL, q, num_steps=T))(p)
    est = epjax.entropy_production_gradient(jax.random.key(seed), MODEL, p, num_steps=T, num_samples=20_000,
                                            batch_size=512)
    assert est.estimator == "score" and est.num_samples == 20_000
    z = jax.tree_util.tree_map(lambda a, b, s: np.abs(a - np.asarray(b)) / s, est.grad, exact, est.stderr)
    assert max(float(np.max(leaf)) for leaf in jax.tree_util.tree_leaves(z)) < 4
    # The gradient is not trivially small: the test could fail.
    assert float(np.max(np.abs(np.asarray(exact.log_transition)))) > 20 * float(np.max(est.stderr.log_transition))


def test_score_function_gradient_of_a_gru(x64):
    gru = rnn.Model(rnn.Config(vocab_size=2, hidden_size=3, cell="gru", dtype="float64"))
    p = gru.init(jax.random.key(1))
    exact = jax.grad(lambda q: epjax.exact_entropy_production(gru, q, num_steps=5))(p)
    est = epjax.entropy_production_gradient(jax.random.key(2), gru, p, num_steps=5, num_samples=8000,
                                            batch_size=1024)
    z = jax.tree_util.tree_map(lambda a, b, s: np.abs(a - np.asarray(b)) / np.maximum(s, 1e-12), est.grad,
                               exact, est.stderr)
    assert max(float(np.max(leaf)) for leaf in jax.tree_util.tree_leaves(z)) < 4.5  # 60 entries: 4.5 SE max


def test_surrogate_gradient_is_the_drivers_gradient(x64):
    p = chain(4)
    key = jax.random.key(5)
    g = jax.grad(lambda q: epjax.entropy_production_surrogate(key, MODEL, q, num_steps=T, num_samples=300))(p)
    est = epjax.entropy_production_gradient(key, MODEL, p, num_steps=T, num_samples=300, batch_size=32)
    assert_trees_close(g, est.grad, rtol=1e-10, atol=1e-12)
    value = epjax.entropy_production_surrogate(key, MODEL, p, num_steps=T, num_samples=300)
    assert float(value) == pytest.approx(est.estimate.mean, rel=1e-12)


def test_pathwise_gradient_of_kalman_ep(x64):
    p = kalman.example("2d")
    exact = jax.grad(lambda q: kalman.entropy_production(q, 6, method="dense"))(p)
    est = epjax.entropy_production_gradient(jax.random.key(0), kalman.model, p, num_steps=6, num_samples=20_000,
                                            batch_size=1024)
    assert est.estimator == "pathwise"
    for name in ("A", "C", "K"):
        z = np.abs(getattr(est.grad, name) - np.asarray(getattr(exact, name))) / getattr(est.stderr, name)
        assert float(np.max(z)) < 4, name
    # S enters through its Cholesky factor: compare the symmetrised gradients.
    sym = lambda g: 0.5 * (np.asarray(g) + np.asarray(g).T)
    z = np.abs(sym(est.grad.S) - sym(exact.S)) / np.maximum(sym(est.stderr.S), 1e-12)
    assert float(np.max(z)) < 4
    # The score-function estimator is unbiased for continuous models too (trajectories held as data).
    score = epjax.entropy_production_gradient(jax.random.key(1), kalman.model, p, num_steps=6, num_samples=20_000,
                                              batch_size=1024, estimator="score")
    z = np.abs(score.grad.A - np.asarray(exact.A)) / score.stderr.A
    assert float(np.max(z)) < 4


def test_gradient_estimator_arguments():
    p = chain(0)
    with pytest.raises(ValueError, match=r"`estimator` must be one of"):
        epjax.entropy_production_gradient(jax.random.key(0), MODEL, p, num_steps=3, num_samples=4, estimator="x")
    with pytest.raises(ValueError, match=r"estimator='pathwise'.*discrete tokens"):
        epjax.entropy_production_surrogate(jax.random.key(0), MODEL, p, num_steps=3, num_samples=4,
                                           estimator="pathwise")
    with pytest.raises(ValueError, match=r"`num_samples` must be an integer >= 2"):
        epjax.entropy_production_surrogate(jax.random.key(0), MODEL, p, num_steps=3, num_samples=1)
    with pytest.raises(ValueError, match=r"entropy_production_gradient` is a host-side driver"):
        jax.jit(lambda q: epjax.entropy_production_gradient(jax.random.key(0), MODEL, q, num_steps=3,
                                                            num_samples=4).grad)(p)


def test_gradient_of_an_infinite_entropy_production_is_refused(x64):
    P = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    p = markov.from_probabilities(np.ones(3) / 3, P)
    with pytest.raises(ValueError, match=r"entropy production is infinite"):
        epjax.entropy_production_gradient(jax.random.key(0), MODEL, p, num_steps=4, num_samples=64)


# ---------------------------------------------------------------------------------------------------------
# the engine checks what it is given


class WideLogProbs(Coin):
    def log_probs(self, params, x):
        return jnp.broadcast_to(jnp.log(params)[x][:, None], (x.shape[0], 3))


class LongSample(Coin):
    def sample(self, key, params, num_steps):
        return jax.random.categorical(key, jnp.log(params), shape=(num_steps + 3,))


class FloatSample(Coin):
    def sample(self, key, params, num_steps):
        return jax.random.normal(key, (num_steps,))


class ImpossibleSample(Coin):
    def log_probs(self, params, x):
        return jnp.where(x == 1, -jnp.inf, jnp.log(0.5))

    def sample(self, key, params, num_steps):
        return jax.random.bernoulli(key, 0.5, (num_steps,)).astype(jnp.int32)


class NaNLogProbs(Coin):
    def log_probs(self, params, x):
        return jnp.where(x[0] == 1, jnp.nan, jnp.log(params)[x])


COIN_P = jnp.array([0.4, 0.6])


@pytest.mark.parametrize(
    "model, reversal, match",
    [
        (Coin(), lambda x: x[::-1][:-1], r"`reversal` must return a sequence of the same shape and dtype"),
        (Coin(), lambda x: x[::-1].astype(jnp.float32), r"`reversal` must return .* dtype"),
        (Coin(), lambda x: jnp.zeros_like(x), r"`reversal` must reorder the positions"),
        (WideLogProbs(), epjax.reverse_tokens, r"`model.log_probs\(params, x\)` must return .* got shape \(5, 3\)"),
        (LongSample(), epjax.reverse_tokens, r"`model.sample\(key, params, num_steps=5\)` must return .* \(8,\)"),
        (FloatSample(), epjax.reverse_tokens, r"must return one trajectory of 5 steps \(int \[5\]\)"),
        (ImpossibleSample(), epjax.reverse_tokens, r"`model.sample` drew paths that `model.log_probs` gives "
                                                   r"probability zero"),
        (NaNLogProbs(), epjax.reverse_tokens, r"`model.log_probs` returned NaN for .* \(first: trajectory \d+\)"),
    ],
)
def test_the_engine_checks_what_it_is_given(model, reversal, match):
    with pytest.raises(ValueError, match=match):
        epjax.entropy_production(jax.random.key(0), model, COIN_P, num_steps=5, num_samples=64, reversal=reversal)


@pytest.mark.parametrize(
    "model, reversal",
    [(Coin(), lambda x: x[::-1][:-1]), (WideLogProbs(), epjax.reverse_tokens), (LongSample(), epjax.reverse_tokens)],
)
def test_shape_checks_hold_inside_jit(model, reversal):
    run = jax.jit(lambda p: epjax.sample_sigmas(jax.random.key(0), model, p, num_steps=5, num_samples=4,
                                                reversal=reversal))
    with pytest.raises(ValueError, match=r"must return"):
        run(COIN_P)
    with pytest.raises(ValueError, match=r"must return"):
        epjax.sigma(model, COIN_P, jnp.array([0, 1, 1, 0, 1]), reversal=reversal) if not isinstance(
            model, LongSample) else epjax.sample_sigmas(jax.random.key(0), model, COIN_P, num_steps=5,
                                                          num_samples=2, reversal=reversal)


def test_exact_enumeration_refuses_a_reversal_that_is_not_a_bijection():
    collapse = lambda x: jnp.sort(x)  # a reordering of each sequence, but many sequences share one image
    with pytest.raises(ValueError, match=r"`reversal` must be a bijection on the 2\*\*4 sequences"):
        epjax.exact_entropy_production(Coin(), COIN_P, num_steps=4, reversal=collapse)


@pytest.mark.parametrize(
    "model",
    [
        markov.MarkovChain(3),
        rnn.Model(rnn.Config(vocab_size=3, hidden_size=4)),
        transformer.Model(transformer.Config(vocab_size=3, context_length=8, num_layers=1, num_heads=1,
                                             embed_size=4)),
        ssm.Model(ssm.Config(vocab_size=3, kind="mamba", d_model=4, num_layers=1)),
    ],
    ids=["markov", "gru", "transformer", "mamba"],
)
def test_out_of_range_ids_give_nan_inside_jit(model):
    p = model.init(jax.random.key(0))
    log_probs = jax.jit(model.log_probs)
    valid = np.asarray(log_probs(p, jnp.array([0, 2, 1, 2, 0])))
    assert np.all(np.isfinite(valid))
    for bad in (-1, 3, -4):
        got = np.asarray(log_probs(p, jnp.array([0, 2, bad, 2, 0])))
        np.testing.assert_array_equal(got[:2], valid[:2])  # the steps before the bad id are unaffected
        assert np.all(np.isnan(got[2:]))  # the bad id and every step conditioned on it
        table = np.asarray(jax.jit(model.next_token_log_probs)(p, jnp.array([0, 2, bad, 2, 0])))
        assert np.all(np.isfinite(table[:3])) and np.all(np.isnan(table[3:]))
    with pytest.raises(ValueError, match=r"`x` must hold token ids in \[0, 3\)"):
        model.log_probs(p, jnp.array([0, -1, 2]))


def test_num_steps_beyond_int32_is_refused():
    for call in (
        lambda: epjax.entropy_production(jax.random.key(0), Coin(), COIN_P, num_steps=2**31, num_samples=4),
        lambda: epjax.sample_sigmas(jax.random.key(0), Coin(), COIN_P, num_steps=2**31, num_samples=4),
        lambda: epjax.exact_entropy_production(Coin(), COIN_P, num_steps=2**40),
    ):
        with pytest.raises(ValueError, match=r"`num_steps` must be at most 2\*\*31 - 1"):
            call()


def test_infinite_and_impossible_are_told_apart(x64):
    # A reversal of probability zero: the EP is infinite (Monte Carlo and exact agree); NaN never appears.
    P = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    p = markov.from_probabilities(np.ones(3) / 3, P)
    est = epjax.entropy_production(jax.random.key(0), MODEL, p, num_steps=4, num_samples=100)
    assert est.mean == np.inf and est.stderr == 0.0 and est.ci_low == np.inf
    assert not np.any(np.isnan(est.sigmas)) and np.any(est.sigmas == np.inf) and np.all(est.sigmas > -np.inf)
    assert float(epjax.exact_entropy_production(MODEL, p, num_steps=3)) == np.inf
    assert float(markov.entropy_production(p, 3)) == np.inf


# ---------------------------------------------------------------------------------------------------------
# models are values


FAMILIES = {
    "markov": lambda t=1.0: markov.MarkovChain(3, temperature=t),
    "gru": lambda t=1.0: rnn.Model(rnn.Config(vocab_size=3, hidden_size=4), temperature=t),
    "transformer": lambda t=1.0: transformer.Model(
        transformer.Config(vocab_size=3, context_length=8, num_layers=1, num_heads=1, embed_size=4), temperature=t),
    "s4d": lambda t=1.0: ssm.Model(ssm.Config(vocab_size=3, kind="s4d", d_model=4, num_layers=1), temperature=t),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_models_are_values(name):
    make = FAMILIES[name]
    a, b = make(), make()
    assert a == b and hash(a) == hash(b) and a is not b
    assert a.with_temperature(2.0) == make(2.0) and hash(a.with_temperature(2.0)) == hash(make(2.0))
    assert a != make(2.0)
    p = a.init(jax.random.key(0))
    x = jnp.array([0, 2, 1, 1])
    before = pickle.loads(pickle.dumps(a))
    expected = np.asarray(a.log_probs(p, x))  # fills the model's caches (weak references)
    after = pickle.loads(pickle.dumps(a))
    assert before == a == after
    np.testing.assert_array_equal(np.asarray(after.log_probs(p, x)), expected)


def test_equal_models_and_sample_counts_share_one_compilation(monkeypatch):
    counted = chex.assert_max_traces(_batching._batch, n=1)
    monkeypatch.setattr(_batching, "_batch", counted)
    make = FAMILIES["gru"]
    p = make().init(jax.random.key(0))
    for model, n in ((make(), 10), (make(), 20), (make(2.0).with_temperature(1.0), 33), (make(), 64)):
        epjax.entropy_production(jax.random.key(0), model, p, num_steps=5, num_samples=n, batch_size=64)
    chex.clear_trace_counter()


def test_progress_bars_of_the_exact_tools(capsys):
    p = chain(0)
    epjax.exact_entropy_production(MODEL, p, num_steps=5, chunk_size=50, progress=True)
    dec.exact_decomposition(MODEL, p, num_steps=5, chunk_size=20, progress=True)
    err = capsys.readouterr().err
    assert "enumerating 3^5 paths" in err and "decomposition: 3^5 paths" in err


def test_engine_uses_first_order_chain_of_test_engine(x64):
    # The contract-only chain of test_engine (no epjax base class) runs through the traceable core too.
    p = chain_params(0)
    s = epjax.sample_sigmas(jax.random.key(0), CHAIN, p, num_steps=4, num_samples=50)
    est = epjax.entropy_production(jax.random.key(0), CHAIN, p, num_steps=4, num_samples=50)
    np.testing.assert_allclose(np.asarray(s), est.sigmas, rtol=1e-13)


@pytest.mark.parametrize("bad", [None, "abc", [[1], [2, 3]], np.array([1 + 2j, 0]), {"a": 1}])
def test_non_numeric_inputs_are_refused_by_name(bad):
    gru = FAMILIES["gru"]()
    p = gru.init(jax.random.key(0))
    for name, call in (
        ("x", lambda: epjax.sigma(gru, p, bad)),
        ("sigmas", lambda: epjax.estimate_from_samples(bad)),
        ("sigmas", lambda: epjax.summarize(bad)),
        ("initial", lambda: markov.from_probabilities(bad, np.eye(2))),
        ("transition", lambda: markov.from_probabilities(np.ones(2) / 2, bad)),
        ("key", lambda: epjax.entropy_production(bad, gru, p, num_steps=3, num_samples=4)),
        ("key", lambda: epjax.sample_sigmas(bad, gru, p, num_steps=3, num_samples=4)),
    ):
        with pytest.raises(ValueError, match=rf"`{name}` must"):
            call()


def test_keys_legacy_and_batched():
    gru = FAMILIES["gru"]()
    p = gru.init(jax.random.key(0))
    legacy = epjax.sample_sigmas(jax.random.PRNGKey(0), gru, p, num_steps=3, num_samples=4)
    assert legacy.shape == (4,)
    with pytest.raises(ValueError, match=r"`key` must be a single jax.random key, got a batch of shape \(2,\)"):
        epjax.sample_sigmas(jax.random.split(jax.random.key(0)), gru, p, num_steps=3, num_samples=4)
    # vmap over keys is the way to batch them.
    many = jax.vmap(lambda k: epjax.sample_sigmas(k, gru, p, num_steps=3, num_samples=4))(
        jax.random.split(jax.random.key(0), 2))
    assert many.shape == (2, 4)


def test_the_kalman_model_is_a_value():
    again = pickle.loads(pickle.dumps(kalman.model))
    assert again == kalman.model == kalman.KalmanModel() and hash(again) == hash(kalman.model)
    assert kalman.model != markov.MarkovChain(3)


def test_the_traceable_cores_in_float32():
    # JAX's default dtype: every core runs under jit/vmap/grad in float32 and agrees with its host driver.
    gru = FAMILIES["gru"]()
    p = gru.init(jax.random.key(0))
    key = jax.random.key(4)
    s = jax.jit(lambda q: epjax.sample_sigmas(key, gru, q, num_steps=6, num_samples=64))(p)
    est = epjax.entropy_production(key, gru, p, num_steps=6, num_samples=64, batch_size=64)
    assert s.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(s), est.sigmas, rtol=1e-5, atol=1e-5)
    summary = jax.jit(epjax.summarize)(s)
    assert summary.mean.dtype == jnp.float32 and float(summary.mean) == pytest.approx(est.mean, rel=1e-5, abs=1e-6)
    g = jax.jit(jax.grad(lambda q: epjax.entropy_production_surrogate(key, gru, q, num_steps=6, num_samples=64)))(p)
    drv = epjax.entropy_production_gradient(key, gru, p, num_steps=6, num_samples=64, batch_size=32)
    leaf = lambda tree: np.asarray(tree["head"]["kernel"][...])
    assert leaf(g).dtype == np.float32
    np.testing.assert_allclose(leaf(g), leaf(drv.grad), rtol=1e-4, atol=1e-5)
    # Exact tools with traced float32 parameters: values and gradients of the Markov chain against float64.
    q32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), chain(0))
    exact32 = jax.jit(lambda q: epjax.exact_entropy_production(MODEL, q, num_steps=T))(q32)
    decomp32 = jax.jit(lambda q: dec.exact_decomposition(MODEL, q, num_steps=T).total)(q32)
    grad32 = jax.grad(lambda q: epjax.exact_entropy_production(MODEL, q, num_steps=T))(q32)
    with jax.enable_x64(True):
        q64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), q32)
        exact64 = float(markov.entropy_production(q64, T))
        grad64 = jax.grad(lambda q: markov.entropy_production(q, T))(q64)
    assert exact32.dtype == jnp.float32
    assert float(exact32) == pytest.approx(exact64, rel=1e-5) and float(decomp32) == pytest.approx(exact64, rel=1e-5)
    assert_trees_close(grad32, grad64, rtol=1e-4, atol=1e-5)
