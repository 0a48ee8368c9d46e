"""S4D and Mamba language models: scan == step == an independent NumPy loop; EP identities; validation."""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import epjax
from epjax import ssm
from epjax.discrete import DiscreteModel

KINDS = ("s4d", "mamba")
TINY = dict(d_model=4, num_layers=2, d_state=3, expand=2, d_conv=3, dt_min=0.1, dt_max=1.0)


@functools.cache
def make(kind: str, **extra):
    """A tiny float64 model and its parameters (built under x64 whatever the caller's mode, and cached)."""
    config = ssm.Config(vocab_size=3, kind=kind, dtype="float64", **{**TINY, **extra})
    model = ssm.Model(config)
    with jax.enable_x64(True):
        params = model.init(jax.random.key(0))
        # A sharper head than the default init, so that the tiny models' laws are far from uniform and the
        # EP identities are tested on non-trivial numbers.
        params = jax.tree_util.tree_map_with_path(
            lambda path, v: 4 * v if "head" in jax.tree_util.keystr(path) else v, params
        )
    return model, params


def make_float32(kind: str):
    """The float32 twin of :func:`make`'s model, with the same parameters rounded."""
    model, params = make(kind)
    model32 = ssm.Model(dataclasses.replace(model.config, dtype="float32"))
    return model32, jax.tree_util.tree_map(lambda v: jnp.asarray(np.asarray(v, np.float32)), params)


@functools.cache
def jitted(model, name: str, *static):
    """``jax.jit(model.<name>)``, compiled once per model for the whole file."""
    return jax.jit(getattr(model, name), static_argnums=static)


# --- an independent NumPy re-implementation (plain loops over time) -------------------------------------


def _rms(x, scale):
    return x / np.sqrt(np.mean(x**2) + 1e-5) * scale


def _gelu(x):  # the tanh approximation (jax.nn.gelu's default)
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _silu(x):
    return x * _sigmoid(x)


def _softplus(x):
    return np.log1p(np.exp(x))


def _s4d_layer(p, u_seq):
    A = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]
    Abar = np.exp(np.exp(p["log_dt"])[:, None] * A)
    Bbar = (Abar - 1) / A
    C = p["C_re"] + 1j * p["C_im"]
    h = np.zeros(A.shape, complex)
    out = []
    for u in u_seq:
        v = _rms(u, p["norm"]["scale"])
        h = Abar * h + Bbar * v[:, None]
        y = (C * h).sum(-1).real + p["D"] * v
        o = _gelu(y) @ p["out"]["kernel"] + p["out"]["bias"]
        a, g = np.split(o, 2)
        out.append(u + a * _sigmoid(g))
    return np.array(out)


def _mamba_layer(p, u_seq):
    E, N = p["A_log"].shape
    K = p["conv_w"].shape[0]
    R = p["dt_proj"]["kernel"].shape[0]
    A = -np.exp(p["A_log"])
    h = np.zeros((E, N))
    history = [np.zeros(E)] * (K - 1)  # the last K - 1 conv inputs, oldest first
    out = []
    for u in u_seq:
        v, z = np.split(_rms(u, p["norm"]["scale"]) @ p["in_proj"]["kernel"], 2)
        window = history + [v]
        c = _silu(sum(p["conv_w"][k] * window[k] for k in range(K)) + p["conv_b"])
        history = window[1:]
        proj = c @ p["x_proj"]["kernel"]
        dt, B, Cm = proj[:R], proj[R : R + N], proj[R + N :]
        delta = _softplus(dt @ p["dt_proj"]["kernel"] + p["dt_proj"]["bias"])
        for e in range(E):  # one channel at a time, the textbook form of the selective scan
            for n in range(N):
                h[e, n] = np.exp(delta[e] * A[e, n]) * h[e, n] + delta[e] * B[n] * c[e]
        y = h @ Cm + p["D"] * c
        out.append(u + (y * _silu(z)) @ p["out_proj"]["kernel"])
    return np.array(out)


def reference_logits(model, params, x):
    """``[T, V]`` logits of ``x`` by the formulas of the module docstring, in float64 NumPy."""
    p = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float64), nnx.to_pure_dict(params))
    u = np.concatenate([p["bos"][None], p["embed"]["embedding"][np.asarray(x[:-1])]], axis=0)
    layer = _s4d_layer if model.config.kind == "s4d" else _mamba_layer
    for i in range(model.config.num_layers):
        u = layer(p["layers"][i], u)
    feats = np.array([_rms(row, p["norm"]["scale"]) for row in u])
    return feats @ p["head"]["kernel"] + p["head"]["bias"]


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --- exactness ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, extra, chunks",
    [("s4d", {}, (1, 3, 64)), ("mamba", {}, (3, 64)), ("mamba", dict(d_conv=1, dt_rank=2), (3,))],
)
def test_scan_and_step_match_numpy_loop(x64, kind, extra, chunks):
    model, params = make(kind, **extra)
    recurrent = jax.jit(lambda p, x: DiscreteModel.logits(model, p, x))  # lax.scan of Model.step
    # Chunk 3 on T = 11 is three associative scans of 3 steps carried by a scan, then a tail of 2 steps;
    # 64 is one associative scan over the whole sequence.
    chunked = [jax.jit(ssm.Model(dataclasses.replace(model.config, scan_chunk=c)).logits) for c in chunks]
    # The default: S4D's FFT convolution; Mamba sequential on CPU, one associative scan elsewhere.
    chunked.append(jitted(model, "logits"))
    for seed in range(2):
        x = jax.random.randint(jax.random.key(seed), (11,), 0, 3)
        ref = reference_logits(model, params, x)
        step = recurrent(params, x)
        assert step.dtype == jnp.float64
        np.testing.assert_allclose(step, ref, rtol=1e-10, atol=1e-12)
        for parallel in chunked:
            np.testing.assert_allclose(parallel(params, x), step, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 257])
def test_s4d_convolution_equals_recurrence(x64, T):
    """The FFT convolution (default S4D scoring) against the sequential recurrence, lengths around the padding."""
    model, params = make("s4d")
    sequential = ssm.Model(dataclasses.replace(model.config, scan_chunk=1))
    x = jax.random.randint(jax.random.key(T), (T,), 0, 3)
    np.testing.assert_allclose(jax.jit(model.logits)(params, x), jax.jit(sequential.logits)(params, x),
                               rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 100])
def test_linear_recurrence_matches_loop(x64, chunk):
    rng = np.random.default_rng(0)
    T = 5
    a = rng.uniform(-1, 1, (T, 2, 3)) * np.exp(1j * rng.uniform(0, 6, (T, 2, 3)))
    b = rng.normal(size=(T, 2, 3)) + 1j * rng.normal(size=(T, 2, 3))
    h0 = rng.normal(size=(2, 3)) + 0j
    y, h_last = ssm.linear_recurrence(lambda ab: ab, lambda h, _: h, jnp.asarray(h0), (a, b), chunk)
    h, want = h0, []
    for t in range(T):
        h = a[t] * h + b[t]
        want.append(h)
    np.testing.assert_allclose(y, np.array(want), rtol=1e-13)
    np.testing.assert_allclose(h_last, h, rtol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_paths_agree_with_float64_reference(kind):
    model, params = make_float32(kind)
    associative = ssm.Model(dataclasses.replace(model.config, scan_chunk=4))
    x = jax.random.randint(jax.random.key(5), (13,), 0, 3)
    ref = reference_logits(model, params, x)
    tol = 50 * np.finfo(np.float32).eps * (1 + np.abs(ref).max())
    for logits in (
        jitted(model, "logits")(params, x),
        jax.jit(associative.logits)(params, x),
        jax.jit(lambda p, x: DiscreteModel.logits(model, p, x))(params, x),
    ):
        assert logits.dtype == jnp.float32
        np.testing.assert_allclose(logits, ref, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_probabilities_sum_to_one(x64, kind):
    model, params = make(kind)
    x = jnp.array(list(itertools.product(range(3), repeat=4)), jnp.int32)
    total = jnp.sum(jnp.exp(jax.jit(jax.vmap(lambda s: jnp.sum(model.log_probs(params, s))))(x)))
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_reversal_identity(x64, kind):
    model, params = make(kind)
    x = jax.random.randint(jax.random.key(6), (6,), 0, 3)
    sigma = jax.jit(lambda p, x: epjax.sigma(model, p, x))
    forward, backward = sigma(params, x), sigma(params, epjax.reverse_tokens(x))
    np.testing.assert_allclose(forward, -backward, rtol=1e-12)
    assert abs(float(forward)) > 1e-3  # the tiny model is genuinely irreversible


@pytest.mark.parametrize("kind", KINDS)
def test_sample_with_log_probs_scores_the_sample(x64, kind):
    model, params = make(kind)
    x, log_p = jitted(model, "sample_with_log_probs", 2)(jax.random.key(7), params, 6)
    assert x.dtype == jnp.int32 and x.shape == (6,)
    assert int(x.min()) >= 0 and int(x.max()) < 3
    np.testing.assert_allclose(log_p, jitted(model, "log_probs")(params, x), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block_size", [1, 2])
def test_exact_entropy_production_matches_monte_carlo(x64, kind, block_size):
    model, params = make(kind)
    reversal = functools.partial(epjax.reverse_blocks, block_size=block_size)
    exact = epjax.exact_entropy_production(model, params, num_steps=6, reversal=reversal)
    est = epjax.entropy_production(
        jax.random.key(8), model, params, num_steps=6, num_samples=4000, reversal=reversal
    )
    assert exact > 1e-3
    assert abs(est.mean - exact) < 4 * est.stderr, (est.mean, est.stderr, exact)


# --- temperature and validation -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_temperature_divides_logits(x64, kind):
    model, params = make(kind)
    x = jax.random.randint(jax.random.key(9), (6,), 0, 3)
    ref = _log_softmax(reference_logits(model, params, x) / 2.5)[np.arange(6), np.asarray(x)]
    np.testing.assert_allclose(jax.jit(model.with_temperature(2.5).log_probs)(params, x), ref, rtol=1e-10)
    assert ssm.Model(model.config, temperature=2.5).temperature == 2.5
    ref = _log_softmax(reference_logits(model, params, x))[np.arange(6), np.asarray(x)]
    np.testing.assert_allclose(jitted(model, "log_probs")(params, x), ref, rtol=1e-10)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            ssm.Model(model.config, temperature=bad)
        with pytest.raises(ValueError, match="temperature"):
            model.with_temperature(bad)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise(kind):
    model, params = make_float32(kind)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.log_probs(params, jnp.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.log_probs(params, jnp.array([0, -1, 2]))
    with pytest.raises(ValueError, match="integer"):
        model.log_probs(params, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        model.log_probs(params, jnp.zeros((2, 3), jnp.int32))
    # Parameters of other models (abstract ones suffice: the tree is checked before any arithmetic).
    other_kind = "mamba" if kind == "s4d" else "s4d"
    for change, message in ((dict(d_model=6), "shape"), (dict(kind=other_kind), "parameter tree")):
        other = ssm.Model(dataclasses.replace(model.config, **change))
        with pytest.raises(ValueError, match=message):
            model.log_probs(jax.eval_shape(other.init, jax.random.key(0)), jnp.array([0, 1]))


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("kind", "lstm"),
        ("d_model", 0),
        ("num_layers", 1.5),
        ("d_state", -1),
        ("expand", 0),
        ("d_conv", 0),
        ("dt_rank", 0),
        ("dt_min", 0.0),
        ("dt_max", float("inf")),
        ("scan_chunk", 0),
        ("dtype", "float16"),
    ],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        ssm.Config(**{"vocab_size": 3, field: value})


def test_config_round_trip_and_misc():
    with pytest.raises(ValueError, match="dt_min"):
        ssm.Config(vocab_size=3, dt_min=0.5, dt_max=0.1)
    with pytest.raises(ValueError, match="config"):
        ssm.Model({"vocab_size": 3})
    config = ssm.Config(vocab_size=3, kind="mamba", d_model=4, d_state=2, num_layers=1)
    assert ssm.Config(**config.to_dict()) == config
    model = ssm.Model(config)
    assert model.family == "ssm" and model.vocab_size == 3 and config.d_inner == 8 and config.rank == 1
    assert model.check_params(jax.eval_shape(model.init, jax.random.key(0))) is None
