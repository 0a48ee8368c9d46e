"""Every invalid input is refused with a ValueError that names the offending argument (docs/architecture.md)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PAPER_2D, PAPER_SCALAR, OneWay

import epjax
from epjax import kalman, markov

I1, I2 = np.eye(1), np.eye(2)


class Coin:
    """Discrete i.i.d. model over two tokens: satisfies the contract."""

    vocab_size = 2

    def log_probs(self, params, x):
        return jnp.log(params)[x]

    def sample(self, key, params, num_steps):
        return jax.random.categorical(key, jnp.log(params), shape=(num_steps,))


class Unnormalised(Coin):
    def log_probs(self, params, x):
        return jnp.zeros(x.shape)  # every sequence gets probability 1


class Continuous(Coin):
    vocab_size = None


class NoSample:
    vocab_size = 2

    def log_probs(self, params, x):
        return jnp.zeros(x.shape)


class NotCallable(Coin):
    sample = 3


COIN = Coin()
COIN_PARAMS = np.array([0.3, 0.7])


@pytest.fixture(scope="module")
def params():
    return kalman.from_state_space(**PAPER_2D)


# ---------------------------------------------------------------------------------------------------------
# from_state_space


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(A=np.ones((2, 3)), C=np.ones((1, 2)), Q=I2, R=I1), "A"),  # non-square A
        (dict(A=np.ones(2), C=np.ones((1, 2)), Q=I2, R=I1), "A"),  # not a matrix
        (dict(A=0.5 * I2, C=np.ones((1, 3)), Q=I2, R=I1), "C"),  # C and A disagree
        (dict(A=0.5 * I2, C=np.ones((1, 2)), Q=I1, R=I1), "Q"),  # Q of the wrong size
        (dict(A=0.5 * I2, C=np.ones((1, 2)), Q=I2, R=I2), "R"),  # R not matching C
    ],
)
def test_from_state_space_shapes(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}` must"):
        kalman.from_state_space(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name, what",
    [
        (dict(Q=np.array([[1.0, 0.5], [0.0, 1.0]]), R=I2), "Q", "symmetric"),
        (dict(Q=np.array([[1.0, 0.0], [0.0, -1.0]]), R=I2), "Q", "positive semi-definite"),
        (dict(Q=I2, R=np.array([[1.0, 0.2], [0.1, 1.0]])), "R", "symmetric"),
        (dict(Q=I2, R=np.array([[1.0, 0.0], [0.0, 0.0]])), "R", "positive definite"),
        (dict(Q=I2, R=np.array([[1.0, 2.0], [2.0, 1.0]])), "R", "positive definite"),
    ],
)
def test_from_state_space_covariances(kwargs, name, what):
    with pytest.raises(ValueError, match=rf"`{name}` must be {what}"):
        kalman.from_state_space(A=PAPER_2D["A"], C=PAPER_2D["C"], **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["A", "C", "Q", "R"])
def test_from_state_space_non_finite(name, bad):
    kwargs = {k: np.array(v, dtype=float) for k, v in PAPER_2D.items()}
    kwargs[name][0, 0] = bad
    with pytest.raises(ValueError, match=rf"`{name}` must have finite entries"):
        kalman.from_state_space(**kwargs)


def test_dare_undetectable_unstable_mode():
    # C = 0 observes nothing and A = 1.2 is unstable: no stabilising solution (P would be infinite).
    with pytest.raises(ValueError, match=r"DARE for \(A, C, Q, R\) has no stabilising solution"):
        kalman.from_state_space([[1.2]], [[0.0]], [[1.0]], [[1.0]])


def test_dare_noise_free_marginal_mode():
    # A = 1 with Q = 0: P = 0 solves the DARE but the whitening filter A (I - K C) = 1 is not stable.
    with pytest.raises(ValueError, match=r"DARE for \(A, C, Q, R\).*whitening filter"):
        kalman.from_state_space([[1.0]], [[1.0]], [[0.0]], [[1.0]])


# ---------------------------------------------------------------------------------------------------------
# Params


def _replace(params, **fields):
    return params._replace(**{k: jnp.asarray(v, dtype=params.A.dtype) for k, v in fields.items()})


@pytest.mark.parametrize(
    "fields, name, what",
    [
        (dict(A=np.ones((2, 3))), "params.A", "shape"),
        (dict(C=np.ones((2, 3))), "params.C", "shape"),
        (dict(K=np.ones((3, 2))), "params.K", "shape"),
        (dict(S=np.eye(3)), "params.S", "shape"),  # S not matching C
        (dict(S=np.array([[1.0, 0.3], [0.0, 1.0]])), "params.S", "symmetric"),
        (dict(S=np.array([[1.0, 0.0], [0.0, -1.0]])), "params.S", "positive definite"),
        (dict(A=np.array([[np.nan, 0.0], [0.0, 0.5]])), "params.A", "finite"),
        (dict(K=np.array([[np.inf, 0.0], [0.0, 0.5]])), "params.K", "finite"),
    ],
)
def test_invalid_params(params, fields, name, what):
    bad = _replace(params, **fields)
    y = jnp.zeros((4, 2), params.A.dtype)
    for call in (
        lambda: kalman.log_probs(bad, y),
        lambda: kalman.sample(jax.random.key(0), bad, 4),
        lambda: kalman.entropy_production(bad, 4),
        lambda: kalman.entropy_production(bad, 4, method="dense"),
        lambda: kalman.reversal_matrix(bad, 4),
        lambda: kalman.entropy_production_rate(bad),
    ):
        with pytest.raises(ValueError, match=rf"`{name}` must.*{what}"):
            call()


def test_unstable_whitening_filter(params):
    # K = 0 with A = 2 I gives A (I - K C) = 2 I: not the innovation form of any Kalman filter.
    bad = _replace(params, A=2 * I2, K=np.zeros((2, 2)))
    for call in (
        lambda: kalman.entropy_production(bad, 5),
        lambda: kalman.entropy_production(bad, 5, method="dense"),
        lambda: kalman.log_probs(bad, jnp.zeros((5, 2))),
    ):
        with pytest.raises(ValueError, match=r"`params` must have a stable whitening filter"):
            call()


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(A=2 * I2, K=np.zeros((2, 2))), r"`params` must have a stable whitening filter"),
        (dict(S=np.array([[1.0, 0.0], [0.0, -1.0]])), r"`params.S` must be positive definite"),
    ],
)
def test_engine_validates_kalman_params(params, fields, match):
    # Inside the engine's jit only shapes are visible: the values are checked before compiling (through the
    # model's check_params), never turned into NaN sigmas or a silently meaningless estimate.
    bad = _replace(params, **fields)
    with pytest.raises(ValueError, match=match):
        epjax.entropy_production(jax.random.key(0), kalman.model, bad, num_steps=5, num_samples=10)


def test_params_wrong_type():
    with pytest.raises(ValueError, match=r"`params` must be an epjax.kalman.Params"):
        kalman.entropy_production((I1, I1, I1), 5)


def test_rate_refuses_unstable_state():
    # A random walk observed in noise: a valid innovation model (stable filter) with no stationary regime.
    walk = kalman.from_state_space([[1.0]], [[1.0]], [[1.0]], [[1.0]])
    assert np.isfinite(float(kalman.entropy_production(walk, 5)))  # finite-T EP is fine
    with pytest.raises(ValueError, match=r"`params.A` must be stable"):
        kalman.entropy_production_rate(walk)


# ---------------------------------------------------------------------------------------------------------
# Kalman functions' other arguments


@pytest.mark.parametrize("num_steps", [0, -3, 2.0, True])
def test_kalman_num_steps(params, num_steps):
    for call in (
        lambda: kalman.entropy_production(params, num_steps),
        lambda: kalman.entropy_production(params, num_steps, method="dense"),
        lambda: kalman.sample(jax.random.key(0), params, num_steps),
        lambda: kalman.sample_with_log_probs(jax.random.key(0), params, num_steps),
        lambda: kalman.reversal_matrix(params, num_steps),
        lambda: kalman.entropy_production_curve(params, num_steps),
        lambda: kalman.decomposition(params, num_steps),
    ):
        with pytest.raises(ValueError, match=r"`num_steps` must be an integer >= 1"):
            call()


def test_kalman_num_steps_beyond_int32(params):
    # Time steps are indexed with int32: 2**31 steps would wrap around; refused before anything runs.
    for call in (
        lambda: kalman.entropy_production(params, 2**31),
        lambda: kalman.entropy_production(params, 2**31, per_step=True),
        lambda: kalman.entropy_production_curve(params, 2**31),
        lambda: kalman.reversal_matrix(params, 2**31),
        lambda: kalman.decomposition(params, 2**31),
        lambda: kalman.sample(jax.random.key(0), params, 2**31),
    ):
        with pytest.raises(ValueError, match=r"`num_steps` must be at most 2\*\*31 - 1 = 2147483647.*got 2147483648"):
            call()


# Each of these would need gigabytes (or, for the decomposition, hours): refused at once, before any allocation.
@pytest.mark.parametrize(
    "call, what",
    [
        (lambda p: kalman.entropy_production(p, 20_000, method="dense"), r'method="dense"'),
        (lambda p: kalman.entropy_production(p, 20_000, method="dense", per_step=True), r'method="dense"'),
        (lambda p: kalman.reversal_matrix(p, 20_000), r"the reversal matrix"),
        (lambda p: kalman.decomposition(p, 20_000, method="dense"), r'decomposition\(method="dense"\)'),
    ],
)
def test_dense_size_guard(params, call, what):
    with pytest.raises(ValueError, match=rf"`num_steps` = 20000 is too large for {what}.*[0-9.]+ GiB.*"
                       r'max_bytes = 2 GiB.*method="recursive"'):
        call(params)


def test_dense_budgets_are_keywords(params):
    # 3 arrays of (T n_y)^2 float32 entries at T = 50, n_y = 2: 120,000 bytes.
    with pytest.raises(ValueError, match=r"about 117 KiB, over the memory budget max_bytes = 97.7 KiB"):
        kalman.entropy_production(params, 50, method="dense", max_bytes=100_000)
    assert float(kalman.entropy_production(params, 50, method="dense", max_bytes=200_000)) > 0
    with pytest.raises(ValueError, match=r"the reversal matrix.*max_bytes"):
        kalman.reversal_matrix(params, 50, max_bytes=100_000)
    # The dense decomposition's work, T (T n_y)^3 / 3 = 1.7e7 at T = 50: refused under a smaller budget.
    with pytest.raises(ValueError, match=r"about 1.7e\+07 floating-point operations.*max_flops = 1e\+07"):
        kalman.decomposition(params, 50, method="dense", max_flops=1e7)
    for bad in (0, -1.0, "2GB", None, True):
        with pytest.raises(ValueError, match=r"`max_bytes` must be a positive number"):
            kalman.entropy_production(params, 5, method="dense", max_bytes=bad)
    with pytest.raises(ValueError, match=r"`max_flops` must be a positive number"):
        kalman.decomposition(params, 5, method="dense", max_flops=0)


def test_cli_dense_refuses_at_once():
    from helpers import run_cli

    code, out, err = run_cli("kalman", "--method", "dense", "--steps", 5, 20_000, "--samples", 10, "--no-progress")
    assert code == 2 and out == ""
    assert "--method dense --steps 20000" in err and 'method="recursive"' in err and "--method recursive" in err


def test_kalman_method(params):
    with pytest.raises(ValueError, match=r"`method` must be 'recursive', 'associative' or 'dense', got 'foo'"):
        kalman.entropy_production(params, 5, method="foo")


@pytest.mark.parametrize(
    "y", [np.zeros((5, 3)), np.zeros(5), np.zeros((5, 2, 1)), np.zeros((0, 2)), np.zeros((5, 2), dtype=int)]
)
def test_log_probs_observation_shape(params, y):
    with pytest.raises(ValueError, match=r"`y` must"):
        kalman.log_probs(params, y)


BAD_ARRAYS = [
    (None, r"must be an array of real numbers, got NoneType"),
    ("abc", r"must be an array of real numbers, got str"),
    ([[1.0, 2.0], [3.0]], r"must be an array of real numbers, got a ragged"),
    (np.ones((2, 2), dtype=bool), r"must be an array of real numbers, got dtype bool"),
    (np.eye(2) + 0.5j, r"must be real, got complex dtype complex128"),
]


@pytest.mark.parametrize("bad, message", BAD_ARRAYS)
@pytest.mark.parametrize("name", ["A", "C", "Q", "R"])
def test_from_state_space_refuses_non_real(name, bad, message):
    # Complex matrices were silently cut to their real part by the float conversion.
    kwargs = {k: np.asarray(v, dtype=float) for k, v in PAPER_2D.items()}
    kwargs[name] = bad
    with pytest.raises(ValueError, match=rf"`{name}` {message}"):
        kalman.from_state_space(**kwargs)


@pytest.mark.parametrize("bad, message", BAD_ARRAYS)
@pytest.mark.parametrize("field", ["A", "C", "K", "S"])
def test_params_refuse_non_real(params, field, bad, message):
    bad_params = params._replace(**{field: bad})
    for call in (lambda: kalman.as_params(bad_params), lambda: kalman.entropy_production(bad_params, 5)):
        with pytest.raises(ValueError, match=rf"`params.{field}` {message}"):
            call()


@pytest.mark.parametrize(
    "y, message",
    [
        (None, r"must be an array of real numbers, got NoneType"),
        ("abc", r"must be an array of real numbers, got str"),
        ([[1.0, 2.0], [3.0]], r"must be an array of real numbers, got a ragged"),
        (np.zeros((4, 2), dtype=bool), r"must be an array of real numbers, got dtype bool"),
        (np.zeros((4, 2)) + 1j, r"must be real, got complex dtype complex128"),
        (jnp.zeros((4, 2), jnp.complex64), r"must be real, got complex dtype complex64"),
    ],
)
def test_observations_refuse_non_real(params, y, message):
    # Complex observations were silently cut to their real part.
    for call in (lambda: kalman.log_probs(params, y), lambda: kalman.innovations(params, y)):
        with pytest.raises(ValueError, match=rf"`y` {message}"):
            call()


def test_float32_covariance_symmetric_to_rounding_is_accepted():
    # A float32 covariance is symmetric only to float32 rounding: accepted, in float32 and next to float64 A.
    rng = np.random.default_rng(0)
    B = rng.normal(size=(3, 3)).astype(np.float32)
    Q = B @ B.T + np.float32(0.1) * np.eye(3, dtype=np.float32)
    Q[0, 1] = np.nextafter(Q[0, 1], np.float32(np.inf))  # one ulp of asymmetry, as a different summation order gives
    assert Q.dtype == np.float32 and Q[0, 1] != Q[1, 0]
    A, C, R = 0.5 * np.eye(3), np.ones((2, 3)), np.eye(2)
    assert kalman.from_state_space(A.astype(np.float32), C.astype(np.float32), Q, R.astype(np.float32)).K.dtype == (
        jnp.float32
    )
    with jax.enable_x64(True):
        params = kalman.from_state_space(A, C, Q, R)
        assert params.K.dtype == jnp.float64
        S32 = np.asarray(params.S, np.float32)
        S32[0, 1] = np.nextafter(S32[0, 1], np.float32(np.inf))
        kalman.as_params(params._replace(S=S32))  # S too, in its own dtype
    # A float64 matrix with the same asymmetry is not symmetric to float64 rounding: still refused.
    with pytest.raises(ValueError, match=r"`Q` must be symmetric"):
        kalman.from_state_space(A, C, Q.astype(np.float64), R)


def test_scalar_model_observation_shape():
    scalar = kalman.from_state_space(**PAPER_SCALAR)
    with pytest.raises(ValueError, match=r"`y` must have shape \[T, 1\]"):
        kalman.log_probs(scalar, np.zeros(5))


# ---------------------------------------------------------------------------------------------------------
# reversals


def test_reverse_blocks_must_tile():
    with pytest.raises(ValueError, match=r"`block_size` must divide the sequence length"):
        epjax.reverse_blocks(jnp.arange(7), 2)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match=r"`block_size` must be an integer >= 1"):
            epjax.reverse_blocks(jnp.arange(6), bad)


def test_reverse_segments_needs_final_end():
    with pytest.raises(ValueError, match=r"`ends` must mark the last token"):
        epjax.reverse_segments(jnp.arange(4), jnp.array([False, True, False, False]))
    with pytest.raises(ValueError, match=r"`ends` must have shape \(4,\)"):
        epjax.reverse_segments(jnp.arange(4), jnp.array([False, True, True]))
    with pytest.raises(ValueError, match=r"`ends` must be a boolean array"):
        epjax.reverse_segments(jnp.arange(4), jnp.array([0, 1, 0, 1]))


@pytest.mark.parametrize(
    "reversal", [epjax.reverse_tokens, functools.partial(epjax.reverse_blocks, block_size=1)]
)
def test_reversal_needs_a_time_axis(reversal):
    with pytest.raises(ValueError, match=r"`x` must have a leading time axis"):
        reversal(jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"`x` must hold at least one time step"):
        reversal(jnp.zeros((0, 2)))


# ---------------------------------------------------------------------------------------------------------
# the engine


@pytest.mark.parametrize(
    "model, missing", [(object(), "log_probs, sample, vocab_size"), (NoSample(), "sample")]
)
def test_model_contract(model, missing):
    with pytest.raises(ValueError, match=rf"`model` must satisfy the epjax model.* without {missing}"):
        epjax.entropy_production(jax.random.key(0), model, COIN_PARAMS, num_steps=3, num_samples=10)
    with pytest.raises(ValueError, match=r"`model` must satisfy"):
        epjax.exact_entropy_production(model, COIN_PARAMS, num_steps=3)


def test_engine_runs_the_models_own_parameter_check():
    class CheckedCoin(Coin):
        def check_params(self, params):
            if not np.isclose(np.sum(params), 1.0):
                raise ValueError(f"`params` must sum to 1, got {np.sum(params)}.")

    bad = np.array([0.3, 0.3])
    with pytest.raises(ValueError, match=r"`params` must sum to 1"):
        epjax.entropy_production(jax.random.key(0), CheckedCoin(), bad, num_steps=3, num_samples=10)
    with pytest.raises(ValueError, match=r"`params` must sum to 1"):
        epjax.exact_entropy_production(CheckedCoin(), bad, num_steps=3)


def test_model_contract_not_callable():
    with pytest.raises(ValueError, match=r"`model.sample` must be callable"):
        epjax.entropy_production(jax.random.key(0), NotCallable(), COIN_PARAMS, num_steps=3, num_samples=10)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_steps=0, num_samples=10), "num_steps"),
        (dict(num_steps=3, num_samples=1), "num_samples"),
        (dict(num_steps=3, num_samples=10, batch_size=0), "batch_size"),
    ],
)
def test_monte_carlo_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= "):
        epjax.entropy_production(jax.random.key(0), COIN, COIN_PARAMS, **kwargs)


def test_monte_carlo_reversal_not_callable():
    with pytest.raises(ValueError, match=r"`reversal` must be a function"):
        epjax.entropy_production(
            jax.random.key(0), COIN, COIN_PARAMS, num_steps=3, num_samples=10, reversal=2
        )


def test_kalman_monte_carlo_arguments(params):
    for kwargs, name in [
        (dict(num_steps=0, num_samples=10), "num_steps"),
        (dict(num_steps=5, num_samples=1), "num_samples"),
    ]:
        with pytest.raises(ValueError, match=rf"`{name}` must be an integer"):
            epjax.entropy_production(jax.random.key(0), kalman.model, params, **kwargs)


def test_block_reversal_not_tiling_in_engine():
    reversal = functools.partial(epjax.reverse_blocks, block_size=2)
    with pytest.raises(ValueError, match=r"`block_size` must divide"):
        epjax.exact_entropy_production(COIN, COIN_PARAMS, num_steps=5, reversal=reversal)


def test_estimate_needs_two_samples_and_no_nan():
    with pytest.raises(ValueError, match=r"`sigmas` must hold at least 2 samples"):
        epjax.estimate_from_samples([0.5])
    with pytest.raises(ValueError, match=r"`sigmas` must not be NaN; got 1 NaN values of 3 \(first at index 1\)"):
        epjax.estimate_from_samples([0.5, np.nan, 1.0])
    with pytest.raises(ValueError, match=r"`sigmas` must not be -inf.*probability zero"):
        epjax.estimate_from_samples([0.5, -np.inf, 1.0])
    with pytest.raises(ValueError, match=r"`sigmas` must be a 1-D array"):
        epjax.estimate_from_samples(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"`sigmas` must be an array of real numbers, got a ragged"):
        epjax.estimate_from_samples([[0.5], [1.0, 2.0]])


def test_estimate_of_an_infinite_entropy_production():
    # sigma = +inf: a sampled path whose reversal has probability zero, so KL = inf for certain (no spread).
    est = epjax.estimate_from_samples([0.5, np.inf, 1.0])
    assert est.mean == np.inf and est.stderr == 0.0 and est.ci_low == est.ci_high == np.inf
    assert est.mean_exp_neg_sigma == pytest.approx(0.5 * (np.exp(-0.5) + np.exp(-1.0)) * 2 / 3)


def test_exact_too_many_sequences():
    with pytest.raises(ValueError, match=r"vocab_size\*\*num_steps = 2\*\*30 .* more than max_sequences"):
        epjax.exact_entropy_production(COIN, COIN_PARAMS, num_steps=30)
    with pytest.raises(ValueError, match=r"more than max_sequences = 100"):
        epjax.exact_entropy_production(COIN, COIN_PARAMS, num_steps=7, max_sequences=100)


def test_exact_needs_a_discrete_model(params):
    with pytest.raises(ValueError, match=r"`model.vocab_size` must be a positive int"):
        epjax.exact_entropy_production(Continuous(), COIN_PARAMS, num_steps=3)
    with pytest.raises(ValueError, match=r"`model.vocab_size` must be a positive int"):
        epjax.exact_entropy_production(kalman.model, params, num_steps=3)


def test_exact_arguments():
    with pytest.raises(ValueError, match=r"`num_steps` must be an integer >= 1"):
        epjax.exact_entropy_production(COIN, COIN_PARAMS, num_steps=0)
    with pytest.raises(ValueError, match=r"`chunk_size` must be an integer >= 1"):
        epjax.exact_entropy_production(COIN, COIN_PARAMS, num_steps=3, chunk_size=0)


def test_exact_refuses_unnormalised_model():
    with pytest.raises(ValueError, match=r"`model.log_probs` does not define a normalised distribution"):
        epjax.exact_entropy_production(Unnormalised(), COIN_PARAMS, num_steps=3)


def test_monte_carlo_infinite_entropy_production():
    # Token 1 can follow token 0 but never the reverse: reversed trajectories can be impossible.
    est = epjax.entropy_production(jax.random.key(0), OneWay(), None, num_steps=4, num_samples=64)
    assert est.mean == np.inf and est.stderr == 0.0  # the exact EP is infinite too
    assert float(epjax.exact_entropy_production(OneWay(), None, num_steps=4)) == np.inf


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_log_probs_refuses_non_finite_observations(params, bad):
    y = np.zeros((5, 2))
    y[3, 1] = bad
    with pytest.raises(ValueError, match=r"`y` must have finite entries, got 1 non-finite"):
        kalman.log_probs(params, y)
    with pytest.raises(ValueError, match=r"`y` must have finite entries"):
        epjax.sigma(kalman.model, params, y)


# ---------------------------------------------------------------------------------------------------------
# discrete families: wrong parameters reach every entry point as a named ValueError


def _families():
    from epjax import markov, rnn, ssm, transformer

    return {
        "gru": rnn.Model(rnn.Config(vocab_size=3, hidden_size=4, cell="gru")),
        "transformer": transformer.Model(
            transformer.Config(vocab_size=3, context_length=8, num_layers=1, num_heads=1, embed_size=4)
        ),
        "mamba": ssm.Model(ssm.Config(vocab_size=3, d_model=4, kind="mamba")),
        "s4d": ssm.Model(ssm.Config(vocab_size=3, d_model=4, kind="s4d")),
        "markov": markov.MarkovChain(3),
    }


FAMILIES = _families()


def _entry_points(model, params):
    x = jnp.array([0, 2, 1, 1])
    return {
        "log_probs": lambda: model.log_probs(params, x),
        "sample": lambda: model.sample(jax.random.key(0), params, 4),
        "sample_with_log_probs": lambda: model.sample_with_log_probs(jax.random.key(0), params, 4),
        "entropy_production": lambda: epjax.entropy_production(
            jax.random.key(0), model, params, num_steps=4, num_samples=4
        ),
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("entry", ["log_probs", "sample", "sample_with_log_probs", "entropy_production"])
def test_shrunk_parameters_are_refused_everywhere(family, entry):
    model = FAMILIES[family]
    params = jax.tree_util.tree_map(lambda a: a[..., :1] if np.ndim(a) else a, model.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"`params.*` must have shape"):
        _entry_points(model, params)[entry]()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("entry", ["log_probs", "sample", "entropy_production"])
def test_integer_parameters_are_refused(family, entry):
    model = FAMILIES[family]
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a).astype(jnp.int32), model.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"`params.*` must have a dtype like float32, got int32"):
        _entry_points(model, params)[entry]()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("entry", ["log_probs", "sample", "entropy_production"])
def test_non_finite_parameters_are_refused(family, entry):
    model = FAMILIES[family]
    params = model.init(jax.random.key(0))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves[-1] = jnp.asarray(leaves[-1]).at[(0,) * np.ndim(leaves[-1])].set(jnp.nan)
    bad = jax.tree_util.tree_unflatten(treedef, leaves)
    message = r"`params.*` must have finite (or -inf )?entries, got 1 NaN or (\+inf|infinite)"
    with pytest.raises(ValueError, match=message):
        _entry_points(model, bad)[entry]()
    model.log_probs(params, jnp.array([0, 1]))  # the valid parameters still pass (no stale verdict)


def test_markov_log_parameters_may_be_minus_inf():
    # A zero transition probability is a valid chain; NaN and +inf are not.
    model = markov.MarkovChain(2)
    params = markov.from_probabilities([0.5, 0.5], [[1.0, 0.0], [0.5, 0.5]])
    assert float(jnp.sum(model.log_probs(params, jnp.array([0, 0, 1])))) == -np.inf
    for bad in (np.nan, np.inf):
        wrong = params._replace(log_initial=params.log_initial.at[0].set(bad))
        with pytest.raises(ValueError, match=r"`params.log_initial` must have finite or -inf entries, got 1 NaN"):
            model.log_probs(wrong, jnp.array([0, 1]))
