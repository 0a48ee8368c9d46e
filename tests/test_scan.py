"""Parallel-in-time (associative-scan) paths equal the sequential ones: Kalman filter and sampling, exact Kalman EP,
SSM linear recurrences. Float64 identities against plain NumPy loops and the sequential scans, at several T (1, odd,
not a multiple of the chunk) and from a non-zero initial state (the term an associative scan can drop)."""

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_params, make_state_space

import epjax
from epjax import kalman, ssm
from epjax.kalman._filter import _innovations, _outputs, affine_prefix

LENGTHS = (1, 2, 3, 8, 13, 64)


def numpy_affine(M, b):
    """``x_t = M x_{t-1} + b_t`` from ``x_{-1} = 0``, one step at a time."""
    x, out = np.zeros(M.shape[0]), []
    for b_t in b:
        x = M @ x + b_t
        out.append(x)
    return np.array(out)


def numpy_innovations(params, y, xhat0):
    """The steady-state filter from ``xhat_{1|0} = xhat0``, as a plain loop."""
    A, C, K = (np.asarray(m) for m in (params.A, params.C, params.K))
    xhat, out = np.asarray(xhat0, float), []
    for y_t in np.asarray(y):
        e = y_t - C @ xhat
        out.append(e)
        xhat = A @ (xhat + K @ e)
    return np.array(out)


# --- the prefix scan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", LENGTHS + (100,))
def test_affine_prefix_matches_loop_from_nonzero_start(x64, T):
    rng = np.random.default_rng(T)
    M = rng.normal(size=(3, 3)) * 0.5
    b = rng.normal(size=(T, 3))
    b[0] += 5.0  # a large initial state: dropping it would show at every step
    got = affine_prefix(jnp.asarray(M), jnp.asarray(b))
    assert got.shape == (T, 3) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, numpy_affine(M, b), rtol=1e-12, atol=1e-12)


# --- Kalman log-likelihood and sampling -----------------------------------------------------------------


@pytest.mark.parametrize("T", (1, 2, 13, 101))
@pytest.mark.parametrize("seed, n, n_y", [(0, 1, 1), (2, 3, 2)])
def test_kalman_innovations_associative_equal_sequential(x64, seed, n, n_y, T):
    params = make_params(seed, n, n_y)
    y = kalman.sample(jax.random.key(seed), params, T)
    xhat0 = jnp.asarray(np.random.default_rng(seed).normal(size=n) * 3.0)
    for start in (None, xhat0):
        oracle = numpy_innovations(params, y, np.zeros(n) if start is None else start)
        sequential = _innovations(params, y, "sequential", start)
        associative = _innovations(params, y, "associative", start)
        np.testing.assert_allclose(sequential, oracle, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(associative, sequential, rtol=1e-10, atol=1e-12)
    # the initial state matters (so the comparison above could fail)
    assert np.max(np.abs(_innovations(params, y, "associative", xhat0) - _innovations(params, y))) > 1e-3
    lp = kalman.log_probs(params, y, method="associative")
    assert lp.shape == (T,) and lp.dtype == jnp.float64
    np.testing.assert_allclose(lp, kalman.log_probs(params, y), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(kalman.innovations(params, y, method="associative"), oracle_zero(params, y),
                               rtol=1e-10, atol=1e-12)


def oracle_zero(params, y):
    return numpy_innovations(params, y, np.zeros(params.A.shape[0]))


@pytest.mark.parametrize("T", (1, 9))
def test_kalman_sampling_associative_equals_sequential(x64, T):
    params = make_params(3, 3, 2)
    y_seq, lp_seq = kalman.sample_with_log_probs(jax.random.key(T), params, T)
    y_par, lp_par = kalman.sample_with_log_probs(jax.random.key(T), params, T, method="associative")
    np.testing.assert_allclose(y_par, y_seq, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(lp_par, lp_seq, rtol=0, atol=0)  # the same innovations' densities
    np.testing.assert_allclose(kalman.sample(jax.random.key(T), params, T, method="associative"), y_seq,
                               rtol=1e-11, atol=1e-12)
    # from a non-zero state, against the filter's own inverse: the innovations of y are e again
    e = jax.random.normal(jax.random.key(T + 1), (T, 2), jnp.float64)
    xhat0 = jnp.array([1.5, -2.0, 0.5])
    for method in ("sequential", "associative"):
        y = _outputs(params, e, method, xhat0)
        np.testing.assert_allclose(numpy_innovations(params, y, xhat0), e, rtol=1e-10, atol=1e-11)


def test_kalman_associative_under_jit_vmap_grad(x64):
    params = make_params(1, 2, 2)
    ys = jax.vmap(lambda k: kalman.sample(k, params, 17))(jax.random.split(jax.random.key(0), 5))

    def total(p, method):
        return jnp.sum(jax.vmap(lambda y: kalman.log_probs(p, y, method=method))(ys))

    values, grads = {}, {}
    for method in ("sequential", "associative"):
        values[method], grads[method] = jax.jit(jax.value_and_grad(total), static_argnums=1)(params, method)
    np.testing.assert_allclose(values["associative"], values["sequential"], rtol=1e-12)
    for g_par, g_seq in zip(grads["associative"], grads["sequential"], strict=True):
        np.testing.assert_allclose(g_par, g_seq, rtol=1e-9, atol=1e-11)


def test_kalman_model_method_is_part_of_its_value(x64):
    parallel = kalman.KalmanModel(method="associative")
    assert parallel == kalman.KalmanModel("associative") and hash(parallel) == hash(kalman.KalmanModel("associative"))
    assert parallel != kalman.model and kalman.KalmanModel() == kalman.model
    assert hash(parallel) != hash(kalman.model)
    assert repr(kalman.model) == "epjax.kalman.model"
    assert repr(parallel) == "epjax.kalman.KalmanModel(method='associative')"
    again = pickle.loads(pickle.dumps(parallel))
    assert again == parallel and again.method == "associative"
    # Every estimator takes it: the same sigma per trajectory, the same Monte Carlo estimate for one key.
    params = make_params(4, 2, 2)
    y = kalman.sample(jax.random.key(1), params, 12)
    np.testing.assert_allclose(epjax.sigma(parallel, params, y), epjax.sigma(kalman.model, params, y), rtol=1e-10)
    key = jax.random.key(2)
    est_par = epjax.entropy_production(key, parallel, params, num_steps=12, num_samples=64)
    est_seq = epjax.entropy_production(key, kalman.model, params, num_steps=12, num_samples=64)
    np.testing.assert_allclose(est_par.mean, est_seq.mean, rtol=1e-9)


def test_kalman_associative_float32_as_accurate_as_sequential():
    # Against the float64 filter: the prefix scan rounds differently but no worse (benchmarks/scan.py has T = 1e5).
    with jax.enable_x64(True):
        params64 = make_params(2, 3, 2, radius=0.95)
        y64 = kalman.sample(jax.random.key(0), params64, 3000)
        ref = np.asarray(kalman.log_probs(params64, y64))
    params32 = jax.tree.map(lambda m: jnp.asarray(np.asarray(m, np.float32)), params64)
    y32 = jnp.asarray(np.asarray(y64, np.float32))
    err = {}
    for method in ("sequential", "associative"):
        lp = kalman.log_probs(params32, y32, method=method)
        assert lp.dtype == jnp.float32
        err[method] = np.max(np.abs(np.asarray(lp, np.float64) - ref))
    assert err["sequential"] < 5e-5 and err["associative"] < 5e-5, err
    assert err["associative"] <= 4 * err["sequential"] + 1e-6, err


# --- exact entropy production ---------------------------------------------------------------------------


def _models():
    yield "n=3, n_y=2", make_params(2, 3, 2)
    yield "n=2, n_y=3, slow", make_params(5, 2, 3, radius=0.99)
    A, C, Q, R = make_state_space(7, 2, 2, radius=1.05)  # unstable A, stable filter: the direct form
    yield "unstable A", kalman.from_state_space(A, C, Q, R)


def test_exact_ep_associative_equals_recursive(x64):
    # The curve holds S_y(1..T): one call checks every horizon up to T, T = 1 and 2 included.
    T = 23
    for name, params in _models():
        curve_rec = kalman.entropy_production_curve(params, T)
        curve_par = kalman.entropy_production_curve(params, T, method="associative")
        assert curve_par.shape == (T,) and curve_par.dtype == jnp.float64
        scale = 1.0 + float(jnp.max(jnp.abs(curve_rec)))
        np.testing.assert_allclose(curve_par, curve_rec, rtol=0, atol=1e-11 * scale, err_msg=name)
        total = kalman.entropy_production(params, T, method="associative")
        np.testing.assert_allclose(total, curve_rec[-1], rtol=0, atol=1e-11 * scale, err_msg=name)


def test_exact_ep_associative_per_step_and_dense(x64):
    T = 6
    for name, params in list(_models())[::2]:  # one stable, one unstable A
        # against the reversal matrix's rows (eq. 73 from eq. 71): an independent formula
        dense = kalman.entropy_production(params, T, per_step=True, method="dense")
        par = kalman.entropy_production(params, T, per_step=True, method="associative")
        np.testing.assert_allclose(par.per_step, dense.per_step, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(par.total, dense.total, rtol=1e-10, atol=1e-13, err_msg=name)
    one = kalman.entropy_production(make_params(2, 3, 2), 1, per_step=True, method="associative")
    assert one.per_step.shape == (1,) and abs(float(one.total)) < 1e-13  # T = 1: nothing to reverse


def test_exact_ep_associative_under_jit_vmap_grad(x64):
    params = make_params(1, 2, 2)

    def ep(p, method):
        return kalman.entropy_production(p, 6, method=method)

    # the dense method's gradient: an independent formula, cheap to compile at this T
    grads = {m: jax.jit(jax.grad(ep), static_argnums=1)(params, m) for m in ("dense", "associative")}
    for g_par, g_rec in zip(grads["associative"], grads["dense"], strict=True):
        np.testing.assert_allclose(g_par, g_rec, rtol=1e-9, atol=1e-11)
    # a batch mixing a stable and an unstable A (both branches of the in-graph choice) against one by one
    A, C, Q, R = make_state_space(7, 2, 2, radius=1.05)
    members = [params, kalman.from_state_space(A, C, Q, R)]
    batch = jax.tree.map(lambda *ms: jnp.stack(ms), *members)
    curves = jax.vmap(lambda p: kalman.entropy_production_curve(p, 6, method="associative"))(batch)
    for curve, member in zip(curves, members, strict=True):
        one = kalman.entropy_production_curve(member, 6, method="associative")  # equal to "recursive": above
        np.testing.assert_allclose(curve, one, rtol=1e-12, atol=1e-13)


def test_exact_ep_associative_float32_stays_accurate():
    # Same deviation form as the recursion: float32 relative error of the associative total stays small at
    # a T where the direct sum would lose all digits.
    with jax.enable_x64(True):
        params64 = make_params(2, 3, 2)
        want = float(kalman.entropy_production(params64, 2000))
    params32 = jax.tree.map(lambda m: jnp.asarray(np.asarray(m, np.float32)), params64)
    got = kalman.entropy_production(params32, 2000, method="associative")
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


# --- SSM linear recurrence ------------------------------------------------------------------------------


@pytest.mark.parametrize("T", (1, 2, 7, 16))
def test_linear_recurrence_paths_keep_the_initial_state(x64, T):
    rng = np.random.default_rng(T)
    a = rng.uniform(-1, 1, (T, 2, 3)) * np.exp(1j * rng.uniform(0, 6, (T, 2, 3)))
    b = rng.normal(size=(T, 2, 3)) + 1j * rng.normal(size=(T, 2, 3))
    h0 = (rng.normal(size=(2, 3)) + 1j * rng.normal(size=(2, 3))) * 4.0
    h, want = h0, []
    for t in range(T):
        h = a[t] * h + b[t]
        want.append(h)
    for chunk in (2, 3, 4, "sequential", "associative"):  # 3 and 4: T not a multiple of the chunk
        y, h_last = ssm.linear_recurrence(lambda ab: ab, lambda h, _: h, jnp.asarray(h0), (a, b), chunk)
        np.testing.assert_allclose(y, np.array(want), rtol=1e-12, atol=1e-13, err_msg=f"chunk={chunk}")
        np.testing.assert_allclose(h_last, h, rtol=1e-12, atol=1e-13, err_msg=f"chunk={chunk}")


@pytest.mark.parametrize("kind", ("s4d", "mamba"))
def test_ssm_scan_method_names_score_like_chunks(x64, kind):
    config = ssm.Config(vocab_size=3, kind=kind, d_model=4, num_layers=1, d_state=3, dtype="float64")
    params = ssm.Model(config).init(jax.random.key(0))
    x = jax.random.randint(jax.random.key(1), (11,), 0, 3)
    scores = {c: ssm.Model(dataclasses.replace(config, scan_chunk=c)).log_probs(params, x)
              for c in ("sequential", "associative")}
    for c, s in scores.items():
        np.testing.assert_allclose(s, scores["sequential"], rtol=1e-12, atol=1e-12, err_msg=f"scan_chunk={c}")
    assert ssm.Config(vocab_size=3, scan_chunk="associative").to_dict()["scan_chunk"] == "associative"


# --- refusals -------------------------------------------------------------------------------------------


def test_bad_method_is_refused_by_name():
    params = kalman.example("scalar")
    y = jnp.zeros((4, 1))
    calls = [
        lambda: kalman.log_probs(params, y, method="parallel"),
        lambda: kalman.innovations(params, y, method="scan"),
        lambda: kalman.sample(jax.random.key(0), params, 3, method="Associative"),
        lambda: kalman.KalmanModel(method=None),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"`method` must be one of \('sequential', 'associative'\), got"):
            call()
    for call in (lambda: kalman.entropy_production(params, 4, method="sequential"),
                 lambda: kalman.entropy_production_curve(params, 4, method="dense")):
        with pytest.raises(ValueError, match="`method` must be 'recursive'.*'associative'.*got"):
            call()
    with pytest.raises(ValueError, match=r"`scan_chunk` must be a positive integer or one of \('sequential', "):
        ssm.Config(vocab_size=3, scan_chunk="parallel")
    with pytest.raises(ValueError, match="`chunk`"):
        ssm.linear_recurrence(lambda ab: ab, lambda h, _: h, jnp.zeros(1), (jnp.ones((2, 1)),) * 2, "fast")
    with pytest.raises(ValueError, match="`chunk`"):
        ssm.linear_recurrence(lambda ab: ab, lambda h, _: h, jnp.zeros(1), (jnp.ones((2, 1)),) * 2, 0)
