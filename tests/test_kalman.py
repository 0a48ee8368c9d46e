"""Kalman innovation models against oracles built here in numpy/scipy (docs/mathematics.md §5, EP paper §6).

The oracles never call epjax internals: the moving-average matrix ``H`` is the simulated impulse response
of the innovation model, the path law is the dense Gaussian ``N(0, H (I_T kron S) H^T)``, the EP is the KL
between that Gaussian and its time reversal, and the rate is a numerical spectral integral.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
import scipy.stats
from helpers import PAPER_2D, PAPER_SCALAR, make_params, make_state_space

import epjax
from epjax import kalman

# (seed, state dim n, obs dim n_y, T): covers n = 1..4, n_y = 1..3, T up to 60.
# Other tests reuse these shapes and lengths: jit caches compiled code per (shape, T), and compilation
# dominates the run time of this file.
ORACLE_CASES = [
    (0, 1, 1, 60),
    (1, 2, 2, 40),
    (2, 4, 3, 60),
    (3, 3, 1, 25),
    (4, 1, 3, 30),
]
# Vector observations, n < n_y and n > n_y: the cases where the whitening and the block structure matter.
VECTOR_CASES = [ORACLE_CASES[1], ORACLE_CASES[2], ORACLE_CASES[4]]


def _np_params(params):
    return tuple(np.asarray(v, dtype=np.float64) for v in params)


def impulse_response(params, num_steps: int) -> np.ndarray:
    """``H`` ``[T n_y, T n_y]`` with ``y = H e``, by simulating the innovation model on unit innovations.

    Column ``(s, j)`` is the output sequence when the only non-zero innovation is ``e_s = unit vector j``;
    all ``T n_y`` impulses are simulated at once (one column each).
    """
    A, C, K, _ = _np_params(params)
    n, n_y = A.shape[0], C.shape[0]
    impulses = np.eye(num_steps * n_y).reshape(num_steps, n_y, num_steps * n_y)  # e_t for every column
    xhat = np.zeros((n, num_steps * n_y))
    rows = []
    for t in range(num_steps):
        rows.append(C @ xhat + impulses[t])
        xhat = A @ (xhat + K @ impulses[t])
    return np.concatenate(rows, axis=0)


def block_reversal(num_steps: int, n_y: int) -> np.ndarray:
    """``J``: reverses the order of the ``T`` blocks of size ``n_y``."""
    return np.kron(np.eye(num_steps)[::-1], np.eye(n_y))


def path_covariance(params, num_steps: int) -> np.ndarray:
    """``Sigma = H (I_T kron S) H^T``: covariance of the whole path ``y`` (flattened time-major)."""
    H = impulse_response(params, num_steps)
    S = np.asarray(params.S, dtype=np.float64)
    return H @ np.kron(np.eye(num_steps), S) @ H.T


def gaussian_kl_oracle(params, num_steps: int) -> float:
    """``KL(N(0, Sigma) || N(0, J Sigma J))`` with Cholesky solves and log-determinants (EP paper eq. 14)."""
    n_y = params.C.shape[0]
    Sigma = path_covariance(params, num_steps)
    J = block_reversal(num_steps, n_y)
    Sigma_b = J @ Sigma @ J
    chol = sl.cho_factor(Sigma, lower=True)
    chol_b = sl.cho_factor(Sigma_b, lower=True)
    trace = np.trace(sl.cho_solve(chol_b, Sigma))
    logdet = 2.0 * np.sum(np.log(np.diag(chol[0])))
    logdet_b = 2.0 * np.sum(np.log(np.diag(chol_b[0])))
    return 0.5 * (trace - num_steps * n_y + logdet_b - logdet)


def per_step_oracle(params, num_steps: int) -> np.ndarray:
    """Eq. 73: ``1/2 [tr(S^{-1} Sigma^B_s) - n_y]`` with ``Sigma^B = Cov(H^{-1} J y)`` built densely."""
    n_y = params.C.shape[0]
    S = np.asarray(params.S, dtype=np.float64)
    H = impulse_response(params, num_steps)
    J = block_reversal(num_steps, n_y)
    Hinv_J = sl.solve_triangular(H, J, lower=True)  # backward innovations e^B = H^{-1} J y
    cov_b = Hinv_J @ path_covariance(params, num_steps) @ Hinv_J.T
    blocks = [cov_b[s * n_y : (s + 1) * n_y, s * n_y : (s + 1) * n_y] for s in range(num_steps)]
    return np.array([0.5 * (np.trace(np.linalg.solve(S, b)) - n_y) for b in blocks])


def spectral_rate(params, num_points: int = 4096) -> float:
    """The spectral KL rate ``(1/4 pi) int_{-pi}^{pi} [tr(f^{-1} f^T) - n_y] dw`` (docs/mathematics.md §5).

    ``f(w) = G S G^*`` with ``G(z) = I + C A (zI - A)^{-1} K`` at ``z = exp(i w)``.

    The trapezoid rule on a uniform periodic grid (here: a plain mean) converges geometrically for this
    analytic periodic integrand, at a rate set by the largest pole/zero modulus (<= 0.9 in these tests).
    """
    A, C, K, S = _np_params(params)
    n, n_y = A.shape[0], C.shape[0]
    z = np.exp(2j * np.pi * np.arange(num_points) / num_points)
    resolvent_K = np.linalg.solve(z[:, None, None] * np.eye(n) - A, np.broadcast_to(K, (num_points, n, n_y)))
    G = np.eye(n_y) + C @ A @ resolvent_K
    f = G @ S @ np.conj(np.swapaxes(G, 1, 2))
    integrand = np.trace(np.linalg.solve(f, np.swapaxes(f, 1, 2)), axis1=1, axis2=2)
    assert np.max(np.abs(integrand.imag)) < 1e-10  # the integrand is real
    return 0.5 * float(np.mean(integrand.real - n_y))


def filter_loop(params, y: np.ndarray):
    """The steady-state filter as a plain Python loop: innovations and ``ln N(e_t; 0, S)`` per step."""
    A, C, K, S = _np_params(params)
    xhat = np.zeros(A.shape[0])
    innovations, logps = [], []
    for y_t in y:
        e = y_t - C @ xhat
        innovations.append(e)
        logps.append(scipy.stats.multivariate_normal.logpdf(e, mean=np.zeros(len(e)), cov=S))
        xhat = A @ (xhat + K @ e)
    return np.array(innovations), np.array(logps)


# ---------------------------------------------------------------------------------------------------------
# 1. exact EP against the dense Gaussian KL


@pytest.mark.parametrize("seed, n, n_y, num_steps", ORACLE_CASES)
def test_entropy_production_matches_gaussian_kl(x64, seed, n, n_y, num_steps):
    params = make_params(seed, n, n_y)
    oracle = gaussian_kl_oracle(params, num_steps)
    assert oracle > 0
    for method in ("dense", "recursive"):
        value = kalman.entropy_production(params, num_steps, method=method)
        assert value.dtype == jnp.float64
        np.testing.assert_allclose(float(value), oracle, rtol=1e-9, err_msg=method)


@pytest.mark.parametrize("seed, n, n_y, num_steps", [ORACLE_CASES[0], ORACLE_CASES[1], ORACLE_CASES[2]])
def test_per_step_contributions(x64, seed, n, n_y, num_steps):
    params = make_params(seed, n, n_y)
    oracle = per_step_oracle(params, num_steps)
    dense = kalman.entropy_production(params, num_steps, method="dense", per_step=True)
    recursive = kalman.entropy_production(params, num_steps, method="recursive", per_step=True)
    for result in (dense, recursive):
        assert result.per_step.shape == (num_steps,) and result.per_step.dtype == jnp.float64
        # Each term is 1/2 [tr(.) - n_y]: round-off scales with n_y (observed <= 1e-14), and single
        # contributions can be ~0 or negative (eq. 73 terms are not KLs; only their sum is), hence atol.
        np.testing.assert_allclose(result.per_step, oracle, rtol=1e-9, atol=1e-12 * n_y)
        np.testing.assert_allclose(float(jnp.sum(result.per_step)), float(result.total), rtol=1e-12)
    np.testing.assert_allclose(dense.per_step, recursive.per_step, rtol=1e-9, atol=1e-12 * n_y)
    default = float(kalman.entropy_production(params, num_steps))
    np.testing.assert_allclose(float(dense.total), default, rtol=1e-9)


def test_unstable_state_with_stable_filter(x64):
    # A detectable model with an unstable A has a stable whitening filter: finite-T EP is well defined.
    A, C, Q, R = make_state_space(7, 2, 2, radius=1.05)
    params = kalman.from_state_space(A, C, Q, R)
    assert np.max(np.abs(np.linalg.eigvals(A))) > 1
    oracle = gaussian_kl_oracle(params, 40)
    for method in ("dense", "recursive"):
        value = float(kalman.entropy_production(params, 40, method=method))
        np.testing.assert_allclose(value, oracle, rtol=1e-9)


@pytest.mark.parametrize("seed, n, n_y, num_steps", [ORACLE_CASES[0], ORACLE_CASES[2]])
def test_entropy_production_curve(x64, seed, n, n_y, num_steps):
    # Every horizon from one recursion pass: entry t - 1 is S_y(t), checked against the dense Gaussian KL.
    params = make_params(seed, n, n_y)
    curve = kalman.entropy_production_curve(params, num_steps)
    assert curve.shape == (num_steps,) and curve.dtype == jnp.float64
    assert abs(float(curve[0])) < 1e-14  # one step: nothing to reverse
    for t in (2, 3, 7, num_steps // 2, num_steps):
        oracle = gaussian_kl_oracle(params, t)
        np.testing.assert_allclose(float(curve[t - 1]), oracle, rtol=1e-9, err_msg=f"T = {t}")
    total = float(kalman.entropy_production(params, num_steps))
    np.testing.assert_allclose(float(curve[-1]), total, rtol=1e-12)


@pytest.mark.parametrize("seed, n, n_y", [(0, 1, 1), (2, 4, 3)])
def test_dense_matches_recursive_long_horizon(x64, seed, n, n_y):
    # Both methods evaluate 1/2 [sum of T traces - T n_y]; the traces add up to ~T n_y + 2 S, so round-off
    # scales with T n_y, not with S (large cancellation when S is small, as for the scalar case). Observed at
    # T = 500: |dense - recursive| ~ 1.5e-12 (scalar, S ~ 0.04) and ~9e-12 (4x3, S ~ 1.5e3), i.e. a few
    # 1e-15 per unit of T n_y. The tolerance below leaves a margin of >100x and is still ~1e8 times smaller
    # than any real discrepancy (a single missing or doubled term is O(1e-3) or more).
    params = make_params(seed, n, n_y)
    num_steps = 500
    dense = float(kalman.entropy_production(params, num_steps, method="dense"))
    recursive = float(kalman.entropy_production(params, num_steps, method="recursive"))
    assert dense > 0
    np.testing.assert_allclose(recursive, dense, rtol=1e-11, atol=1e-12 * num_steps * n_y)


def test_t_equals_one_is_zero(x64):
    # One step: reversal is the identity, the EP is 0 exactly.
    params = make_params(1, 2, 2)
    for method in ("dense", "recursive"):
        assert abs(float(kalman.entropy_production(params, 1, method=method))) < 1e-14


def test_whitened_frobenius_needed_for_vector_observations(x64):
    # Eq. 71 with the plain ||R||_F^2 is wrong when S is not proportional to I: the oracle tells them apart.
    params = make_params(1, 2, 2)
    num_steps = 40
    R = np.asarray(kalman.reversal_matrix(params, num_steps))
    plain = 0.5 * (np.sum(R**2) - num_steps * 2)
    oracle = gaussian_kl_oracle(params, num_steps)
    assert abs(plain - oracle) > 1e-3 * oracle
    np.testing.assert_allclose(float(kalman.entropy_production(params, num_steps)), oracle, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# 3. the rate


@pytest.mark.parametrize("seed, n, n_y", [(1, 2, 2), (2, 4, 3), (4, 1, 3)])
def test_rate_matches_spectral_integral(x64, seed, n, n_y):
    params = make_params(seed, n, n_y)
    rate = kalman.entropy_production_rate(params)
    assert rate.dtype == jnp.float64 and rate.shape == ()
    rate = float(rate)
    # n = 1 with vector observations is reversible too (Cov(y_t, y_t+k) = c c^T a^k v is symmetric): there
    # the rate is 0 up to round-off, hence the absolute tolerance.
    np.testing.assert_allclose(rate, spectral_rate(params), rtol=1e-9, atol=1e-13)


def test_rate_is_the_slope(x64):
    params = kalman.from_state_space(**PAPER_2D)
    rate = float(kalman.entropy_production_rate(params))
    slope = float(kalman.entropy_production(params, 201)) - float(kalman.entropy_production(params, 200))
    # The slope converges geometrically (spectral radii <= 0.8); at T = 200 it is the rate to round-off
    # of the difference of two numbers of size ~13 (observed ~1e-14).
    assert abs(slope - rate) < 1e-11
    np.testing.assert_allclose(rate, spectral_rate(params), rtol=1e-9)


@pytest.mark.parametrize("seed, n", [(0, 1), (3, 3)])
def test_rate_zero_for_scalar_observations(x64, seed, n):
    params = make_params(seed, n, 1)
    rate = kalman.entropy_production_rate(params)
    assert float(rate) == 0.0
    assert abs(float(kalman._exact._rate_closed_form(params))) < 1e-12
    assert abs(spectral_rate(params)) < 1e-12


def test_scalar_ep_saturates(x64):
    # Scalar observations: time-reversible stationary law, the EP tends to a boundary value (docs/mathematics.md §5).
    params = kalman.from_state_space(**PAPER_SCALAR)
    s200 = float(kalman.entropy_production(params, 200))
    s201 = float(kalman.entropy_production(params, 201))
    assert abs(s201 - s200) < 1e-12
    np.testing.assert_allclose(s200, 0.5574, atol=5e-5)


# ---------------------------------------------------------------------------------------------------------
# 4. log_probs, innovations, the reversal matrix


@pytest.mark.parametrize("seed, n, n_y, num_steps", [ORACLE_CASES[0], *VECTOR_CASES[1:]])
def test_log_probs_match_dense_gaussian_and_loop(x64, seed, n, n_y, num_steps):
    params = make_params(seed, n, n_y)
    y = np.asarray(kalman.sample(jax.random.key(seed), params, num_steps))
    assert y.shape == (num_steps, n_y) and y.dtype == np.float64
    logp = np.asarray(kalman.log_probs(params, y))
    assert logp.shape == (num_steps,) and logp.dtype == np.float64

    Sigma = path_covariance(params, num_steps)
    joint = scipy.stats.multivariate_normal.logpdf(y.reshape(-1), mean=np.zeros(num_steps * n_y), cov=Sigma)
    np.testing.assert_allclose(np.sum(logp), joint, rtol=1e-10)

    e_loop, logp_loop = filter_loop(params, y)
    np.testing.assert_allclose(logp, logp_loop, rtol=1e-10, atol=1e-12)
    e = np.asarray(kalman.innovations(params, jnp.asarray(y)))
    np.testing.assert_allclose(e, e_loop, rtol=1e-10, atol=1e-12)
    H = impulse_response(params, num_steps)
    np.testing.assert_allclose(e.reshape(-1), sl.solve_triangular(H, y.reshape(-1), lower=True), atol=1e-10)


@pytest.mark.parametrize("seed, n, n_y, num_steps", VECTOR_CASES)
def test_reversal_matrix(x64, seed, n, n_y, num_steps):
    params = make_params(seed, n, n_y)
    R = kalman.reversal_matrix(params, num_steps)
    assert R.dtype == jnp.float64 and R.shape == (num_steps * n_y, num_steps * n_y)
    R = np.asarray(R)
    H = impulse_response(params, num_steps)
    oracle = sl.solve_triangular(H, block_reversal(num_steps, n_y) @ H, lower=True)
    np.testing.assert_allclose(R, oracle, rtol=1e-10, atol=1e-10 * np.max(np.abs(oracle)))
    # R maps forward innovations to the innovations of the reversed sequence.
    y = kalman.sample(jax.random.key(100 + seed), params, num_steps)
    e = np.asarray(kalman.innovations(params, y)).reshape(-1)
    e_back = np.asarray(kalman.innovations(params, y[::-1])).reshape(-1)
    np.testing.assert_allclose(e_back, R @ e, rtol=1e-10, atol=1e-10 * np.max(np.abs(e_back)))
    # R^2 = H^{-1} J H H^{-1} J H = I: reversing twice gives back the forward innovations.
    np.testing.assert_allclose(R @ R, np.eye(num_steps * n_y), atol=1e-9 * np.max(np.abs(R)) ** 2)


def test_sample_with_log_probs_consistent(x64):
    params = make_params(4, 1, 3)
    y, logp = kalman.sample_with_log_probs(jax.random.key(3), params, 30)
    np.testing.assert_array_equal(y, kalman.sample(jax.random.key(3), params, 30))
    np.testing.assert_allclose(logp, kalman.log_probs(params, y), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# 5. from_state_space


@pytest.mark.parametrize(
    "seed, n, n_y, radius", [(0, 1, 1, 0.9), (1, 2, 2, 0.9), (2, 4, 3, 0.9), (3, 3, 1, 0.5), (6, 2, 2, 1.2)]
)
def test_from_state_space_solves_the_dare(x64, seed, n, n_y, radius):
    A, C, Q, R = make_state_space(seed, n, n_y, radius)
    params, P = kalman.from_state_space(A, C, Q, R, return_covariance=True)
    P = np.asarray(P)
    assert P.dtype == np.float64
    np.testing.assert_allclose(P, P.T, atol=1e-12 * np.max(np.abs(P)))
    assert np.min(np.linalg.eigvalsh(P)) >= -1e-12 * np.max(np.abs(P))
    residual = A @ (P - P @ C.T @ np.linalg.solve(C @ P @ C.T + R, C @ P)) @ A.T + Q - P
    assert np.max(np.abs(residual)) < 1e-10 * np.max(np.abs(P))
    # scipy's control-form DARE; the filtering DARE is its dual (A^T, C^T).
    P_scipy = sl.solve_discrete_are(A.T, C.T, Q, R)
    np.testing.assert_allclose(P, P_scipy, rtol=1e-9, atol=1e-10 * np.max(np.abs(P_scipy)))
    S = C @ P_scipy @ C.T + R
    np.testing.assert_allclose(params.S, S, rtol=1e-9)
    np.testing.assert_allclose(params.K, P_scipy @ C.T @ np.linalg.inv(S), rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(params.A, A)
    np.testing.assert_array_equal(params.C, C)
    F = A @ (np.eye(n) - np.asarray(params.K) @ C)
    assert np.max(np.abs(np.linalg.eigvals(F))) < 1.0  # stabilising solution


def test_paper_scalar_innovation_form(x64):
    # Scalar DARE in closed form: P = a^2 P R / (P + R) + q.
    params, P = kalman.from_state_space(**PAPER_SCALAR, return_covariance=True)
    a, q, r = 0.9, 1.0, 1.0
    b = r * (1 - a**2) - q  # P^2 + b P - q r = 0
    p = (-b + np.sqrt(b**2 + 4 * q * r)) / 2
    np.testing.assert_allclose(float(P[0, 0]), p, rtol=1e-13)
    np.testing.assert_allclose(float(params.S[0, 0]), p + r, rtol=1e-13)
    np.testing.assert_allclose(float(params.K[0, 0]), p / (p + r), rtol=1e-13)


# ---------------------------------------------------------------------------------------------------------
# 6-7. the EP paper's numbers


def test_paper_values(x64):
    scalar = kalman.from_state_space(**PAPER_SCALAR)
    two_d = kalman.from_state_space(**PAPER_2D)
    reported = {
        (0, 5): 0.25442, (0, 10): 0.45098, (0, 50): 0.55742,
        (1, 5): 0.37300, (1, 10): 0.75829, (1, 50): 3.38174,
    }  # fmt: skip
    for (case, num_steps), value in reported.items():
        params = (scalar, two_d)[case]
        got = float(kalman.entropy_production(params, num_steps))
        assert round(got, 5) == value, (case, num_steps, got)
    assert round(float(kalman.entropy_production_rate(two_d)), 4) == 0.0654


@pytest.mark.parametrize("case", ["scalar", "2d"])
@pytest.mark.parametrize("num_steps", [5, 10])
def test_monte_carlo_within_error_bars(case, num_steps):
    # Default (float32) path through the generic engine. Reference: the exact values of the EP paper's table,
    # checked to all printed digits in test_paper_values; their rounding (5e-6) is far below 4 stderr (~0.04).
    state_space = PAPER_SCALAR if case == "scalar" else PAPER_2D
    exact = {("scalar", 5): 0.25442, ("scalar", 10): 0.45098, ("2d", 5): 0.37300, ("2d", 10): 0.75829}[
        (case, num_steps)
    ]
    params = kalman.from_state_space(**state_space)
    assert params.A.dtype == jnp.float32
    est = epjax.entropy_production(
        jax.random.key(num_steps), kalman.model, params, num_steps=num_steps, num_samples=4000
    )
    assert est.num_samples == 4000
    assert abs(est.mean - exact) < 4 * est.stderr, (est, exact)
    if num_steps == 5:  # <exp(-sigma)> = 1 (eq. 20); its tail is light enough only for small sigma
        assert abs(est.mean_exp_neg_sigma - 1.0) < 4 * est.exp_neg_sigma_stderr, est


# ---------------------------------------------------------------------------------------------------------
# 10. dtypes


def test_float32_path():
    # Without x64 everything is float32. Oracles: the float64 numpy filter loop and dense Gaussian KL for the
    # very same (float32-rounded) parameters, so the tolerance measures only float32 round-off in epjax:
    # per-step terms of size ~1 and a sum of ~T n_y^2 such terms, a few hundred ulps (~1e-5) at most.
    params = kalman.from_state_space(**PAPER_2D)
    y = kalman.sample(jax.random.key(0), params, 10)
    assert params.K.dtype == params.S.dtype == y.dtype == jnp.float32
    logp = kalman.log_probs(params, y)
    assert logp.dtype == jnp.float32
    np.testing.assert_allclose(logp, filter_loop(params, np.asarray(y, np.float64))[1], rtol=1e-5, atol=1e-5)
    oracle = gaussian_kl_oracle(params, 10)
    for method in ("dense", "recursive"):
        value = kalman.entropy_production(params, 10, method=method)
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(float(value), oracle, rtol=1e-5)
    assert kalman.entropy_production_rate(params).dtype == jnp.float32


def test_jit_and_model_object(x64):
    params = make_params(1, 2, 2)
    y = kalman.sample(jax.random.key(1), params, 40)
    np.testing.assert_allclose(jax.jit(kalman.log_probs)(params, y), kalman.log_probs(params, y), rtol=1e-12)
    np.testing.assert_allclose(kalman.model.log_probs(params, y), kalman.log_probs(params, y), rtol=0)
    assert kalman.model.vocab_size is None
    assert isinstance(kalman.model, epjax.AutoregressiveModel)
    # sigma of one path = ln P(y) - ln P(y reversed), both from the dense Gaussian.
    Sigma = path_covariance(params, 40)
    flat = np.asarray(y).reshape(-1)
    flat_rev = np.asarray(y)[::-1].reshape(-1)
    mvn = scipy.stats.multivariate_normal(mean=np.zeros(80), cov=Sigma)
    np.testing.assert_allclose(
        float(epjax.sigma(kalman.model, params, y)), mvn.logpdf(flat) - mvn.logpdf(flat_rev), rtol=1e-9
    )


# The documented float32 accuracy of the exact EP (epjax.kalman._exact module docstring): relative error at most
# 1e-5 against float64 for stable A at every T (measured: at most 7e-7 for the paper examples and random models,
# T = 1e3 ... 1e7). The reference is the float64 EP of the same float32-rounded parameters, so only float32
# round-off in the EP is measured. The direct sum used before failed this by orders of magnitude (2-D example:
# 5e-3 at T = 1e5, 6 % at 1e6, 47 % at 1e7).
FLOAT32_RTOL = 1e-5


def _float32_and_float64(state_space):
    params32 = kalman.from_state_space(**{k: np.asarray(v, np.float32) for k, v in state_space.items()})
    with jax.enable_x64(True):
        params64 = kalman.Params(*(jnp.asarray(np.asarray(x), jnp.float64) for x in params32))
    return params32, params64


def _float64(fn, *args):
    with jax.enable_x64(True):
        return np.asarray(fn(*args))


FLOAT32_CASES = {
    "paper 2d": PAPER_2D,
    "paper scalar": PAPER_SCALAR,
    "seed0 n4 ny2": dict(zip("ACQR", make_state_space(0, 4, 2), strict=True)),
    "seed2 n4 ny3": dict(zip("ACQR", make_state_space(2, 4, 3), strict=True)),
}


@pytest.mark.parametrize("case", list(FLOAT32_CASES))
def test_float32_exact_ep_long_horizon(case):
    params32, params64 = _float32_and_float64(FLOAT32_CASES[case])
    num_steps = 10**6
    value = kalman.entropy_production(params32, num_steps)
    assert value.dtype == jnp.float32
    reference = float(_float64(kalman.entropy_production, params64, num_steps))
    np.testing.assert_allclose(float(value), reference, rtol=FLOAT32_RTOL)
    # The traced path (the checkpointed scan, what gradients go through) has the same accuracy.
    traced = jax.jit(lambda p: kalman.entropy_production(p, num_steps))(params32)
    np.testing.assert_allclose(float(traced), reference, rtol=FLOAT32_RTOL)


def test_float32_exact_ep_ten_million_steps():
    # The target: the 2-D example at T = 1e7 (the direct sum was 47 % off here).
    params32, params64 = _float32_and_float64(PAPER_2D)
    num_steps = 10**7
    reference = float(_float64(kalman.entropy_production, params64, num_steps))
    np.testing.assert_allclose(float(kalman.entropy_production(params32, num_steps)), reference, rtol=FLOAT32_RTOL)


def test_float32_curve_and_per_step():
    params32, params64 = _float32_and_float64(PAPER_2D)
    num_steps = 10**5
    curve = kalman.entropy_production_curve(params32, num_steps)
    reference = _float64(kalman.entropy_production_curve, params64, num_steps)
    assert curve.dtype == jnp.float32
    # Relative to each entry, from T = 100 on (the first entries are tiny: S_y(1) = 0, S_y(2) ~ 1e-2).
    np.testing.assert_allclose(np.asarray(curve)[99:], reference[99:], rtol=FLOAT32_RTOL)
    assert float(curve[0]) == 0.0
    result = kalman.entropy_production(params32, num_steps, per_step=True)
    ref_steps = _float64(lambda p: kalman.entropy_production(p, num_steps, per_step=True).per_step, params64)
    np.testing.assert_allclose(float(result.total), float(np.sum(ref_steps)), rtol=FLOAT32_RTOL)
    # Each contribution (size ~ the rate, 0.065) is formed as rate + decaying terms: float32 round-off of it.
    np.testing.assert_allclose(np.asarray(result.per_step), ref_steps, rtol=0, atol=1e-6)


def test_float32_reversible_model_with_vector_observations():
    # Documented limitation: with n_y > 1 and rate 0 (n = 1 here: a reversible model), float32 gives the
    # closed-form rate as a few 1e-8 instead of 0, and the EP's absolute error grows like T |rate32| <= T eps n_y,
    # where the exact EP saturates (observed 0.04 T eps n_y: 1.5e-2 at T = 1e6 on an EP of 1.5). With n_y = 1 the
    # rate is exactly 0 and the error stays bounded (the scalar example above).
    params32, params64 = _float32_and_float64(dict(zip("ACQR", make_state_space(4, 1, 3), strict=True)))
    eps, n_y = float(jnp.finfo(jnp.float32).eps), 3
    for num_steps in (10**4, 10**6):
        error = abs(float(kalman.entropy_production(params32, num_steps)) -
                    float(_float64(kalman.entropy_production, params64, num_steps)))
        assert error <= num_steps * eps * n_y, (num_steps, error)
