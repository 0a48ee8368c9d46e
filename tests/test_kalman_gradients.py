"""Gradients of every exact Kalman quantity against central finite differences (docs/mathematics.md §10), in float64.

Each check compares the directional derivative ``<grad f(x), d>`` along a random direction ``d`` (symmetric for
covariances) with a Richardson-extrapolated central difference ``(4 D(h/2) - D(h)) / 3``,
``D(h) = (f(x + h d) - f(x - h d)) / 2h``, whose truncation error is ``O(h^4)``. With ``h = 1e-3`` and the
smooth functions here the difference quotient is good to about ``1e-10`` relative (round-off ``eps |f| / h``
dominates); the tolerances below are ``1e-7`` relative, far below any real error (a missing term or a wrong
transpose changes the derivative at ``1e-2`` or more). The finite differences evaluate concrete values (for the
recursive total: the compiled-once, traced-length loop), the gradients go through ``jax.grad`` (the
checkpointed scan), so each check also ties the two code paths together.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PAPER_2D, PAPER_SCALAR, make_state_space

from epjax import kalman

RTOL = 1e-7
H = 1e-3

# (label, state-space matrices): random models over several seeds (n = 1..4, n_y = 1..3) and the paper's.
CASES = {
    "seed0 n1 ny1": make_state_space(0, 1, 1),
    "seed1 n2 ny2": make_state_space(1, 2, 2),
    "seed2 n4 ny3": make_state_space(2, 4, 3),
    "seed3 n3 ny1": make_state_space(3, 3, 1),
    "paper scalar": tuple(np.asarray(PAPER_SCALAR[k], float) for k in "ACQR"),
    "paper 2d": tuple(np.asarray(PAPER_2D[k], float) for k in "ACQR"),
}
SYMMETRIC = (False, False, True, True)  # A, C, Q, R: perturb Q and R symmetrically


def directions(args, symmetric, seed=0):
    """One random unit direction per argument; symmetric where the argument is a covariance."""
    rng = np.random.default_rng(seed)
    out = []
    for x, sym in zip(args, symmetric, strict=True):
        d = rng.normal(size=np.shape(x))
        if sym:
            d = d + d.T
        out.append(d / np.linalg.norm(d))
    return out


def finite_difference(loss, args, dirs, h=H):
    def along(t):
        return float(loss(*[jnp.asarray(a + t * d) for a, d in zip(args, dirs, strict=True)]))

    def central(step):
        return (along(step) - along(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def check_gradient(loss, args, symmetric=SYMMETRIC, *, rtol=RTOL, seed=0):
    """``<grad loss, d>`` against finite differences; returns the gradients."""
    args = [jnp.asarray(a) for a in args]
    grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    dirs = directions(args, symmetric, seed)
    predicted = sum(float(jnp.vdot(g, d)) for g, d in zip(grads, dirs, strict=True))
    fd = finite_difference(loss, [np.asarray(a) for a in args], dirs)
    scale = abs(float(loss(*args)))  # round-off of the difference quotient is relative to |f|
    np.testing.assert_allclose(predicted, fd, rtol=rtol, atol=1e-9 * max(scale, 1.0))
    for g in grads:
        assert bool(jnp.all(jnp.isfinite(g)))
    return grads


def weights(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


# ---------------------------------------------------------------------------------------------------------
# the DARE


@pytest.mark.parametrize("case", list(CASES))
def test_from_state_space_gradient(x64, case):
    # K, S and the DARE solution P: the implicit derivative (a Stein equation) against finite differences of
    # the converged doubling iteration.
    A, C, Q, R = CASES[case]
    n, n_y = A.shape[0], C.shape[0]
    wK, wS, wP = weights(1, (n, n_y)), weights(2, (n_y, n_y)), weights(3, (n, n))

    def loss(A, C, Q, R):
        params, P = kalman.from_state_space(A, C, Q, R, return_covariance=True)
        return jnp.sum(wK * params.K) + jnp.sum(wS * params.S) + jnp.sum(wP * P)

    check_gradient(loss, (A, C, Q, R))


def test_dare_gradient_is_symmetric_in_q(x64):
    # Q enters through its symmetric part, so the gradient with respect to Q is symmetric.
    A, C, Q, R = CASES["seed2 n4 ny3"]
    grad = jax.grad(lambda Q: jnp.sum(kalman.from_state_space(A, C, Q, R).K ** 2))(jnp.asarray(Q))
    np.testing.assert_allclose(grad, grad.T, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# entropy production: total, per step, curve


@pytest.mark.parametrize(
    "case, num_steps",
    [
        ("paper 2d", 1),
        ("paper 2d", 2),
        ("paper 2d", 1000),
        ("paper scalar", 100),
        ("seed0 n1 ny1", 7),
        ("seed1 n2 ny2", 100),
        ("seed2 n4 ny3", 1000),
        ("seed3 n3 ny1", 7),
    ],
)
def test_recursive_entropy_production_gradient(x64, case, num_steps):
    def loss(A, C, Q, R):
        return kalman.entropy_production(kalman.from_state_space(A, C, Q, R), num_steps)

    grads = check_gradient(loss, CASES[case])
    if num_steps == 1:  # S_y(1) = 0 for every model
        assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)


@pytest.mark.parametrize("case, num_steps", [("paper 2d", 7), ("seed2 n4 ny3", 40)])
def test_dense_entropy_production_gradient(x64, case, num_steps):
    def loss(A, C, Q, R):
        return kalman.entropy_production(kalman.from_state_space(A, C, Q, R), num_steps, method="dense")

    grads = check_gradient(loss, CASES[case])

    def recursive(A, C, Q, R):
        return kalman.entropy_production(kalman.from_state_space(A, C, Q, R), num_steps)

    for g, g_rec in zip(grads, jax.grad(recursive, argnums=(0, 1, 2, 3))(*CASES[case]), strict=True):
        np.testing.assert_allclose(g, g_rec, rtol=1e-8, atol=1e-10 * float(jnp.max(jnp.abs(g))))


@pytest.mark.parametrize("method, case, num_steps", [("recursive", "seed2 n4 ny3", 40), ("dense", "paper 2d", 40)])
def test_per_step_gradient(x64, method, case, num_steps):
    w = weights(4, (num_steps,))

    def loss(A, C, Q, R):
        result = kalman.entropy_production(
            kalman.from_state_space(A, C, Q, R), num_steps, method=method, per_step=True
        )
        return jnp.sum(w * result.per_step) + result.total

    check_gradient(loss, CASES[case])


@pytest.mark.parametrize("case, num_steps", [("paper 2d", 40), ("seed2 n4 ny3", 40)])
def test_curve_gradient(x64, case, num_steps):
    w = weights(5, (num_steps,))

    def loss(A, C, Q, R):
        return jnp.sum(w * kalman.entropy_production_curve(kalman.from_state_space(A, C, Q, R), num_steps))

    check_gradient(loss, CASES[case])


def test_unstable_state_gradient(x64):
    # Unstable A with a stable whitening filter: the direct recursion (the fallback branch), differentiated
    # with respect to the innovation-form parameters themselves.
    params = kalman.from_state_space(*make_state_space(7, 2, 2, radius=1.05))
    assert np.max(np.abs(np.linalg.eigvals(np.asarray(params.A)))) > 1
    w = weights(8, (40,))
    for per_step in (False, True):

        def loss(A, C, K, S, per_step=per_step):
            result = kalman.entropy_production(kalman.Params(A, C, K, S), 40, per_step=per_step)
            return jnp.sum(w * result.per_step) if per_step else result

        check_gradient(loss, tuple(params), (False, False, False, True))
    curve = lambda A, C, K, S: jnp.sum(kalman.entropy_production_curve(kalman.Params(A, C, K, S), 40))  # noqa: E731
    check_gradient(curve, tuple(params), (False, False, False, True))


# ---------------------------------------------------------------------------------------------------------
# rate, decomposition, reversal matrix


@pytest.mark.parametrize("case", ["paper 2d", "seed1 n2 ny2", "seed2 n4 ny3"])
def test_rate_gradient(x64, case):
    def loss(A, C, Q, R):
        return kalman.entropy_production_rate(kalman.from_state_space(A, C, Q, R))

    check_gradient(loss, CASES[case])


def test_rate_gradient_zero_for_scalar_observations(x64):
    def loss(A, C, Q, R):
        return kalman.entropy_production_rate(kalman.from_state_space(A, C, Q, R))

    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*CASES["seed3 n3 ny1"])
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)  # the rate is 0 identically


@pytest.mark.parametrize("method", ["recursive", "dense"])
@pytest.mark.parametrize("case", ["paper 2d", "seed2 n4 ny3"])
def test_decomposition_gradient(x64, method, case):
    # Includes the last steps, where the backward summary is rank-deficient (pseudo-inverse of fixed rank).
    num_steps = 9
    w = weights(6, (5, num_steps))

    def loss(A, C, Q, R):
        d = kalman.decomposition(kalman.from_state_space(A, C, Q, R), num_steps, method=method)
        return sum(jnp.sum(wi * term) for wi, term in zip(w, d, strict=True))

    check_gradient(loss, CASES[case])


def test_decomposition_gradient_ill_conditioned(x64):
    # seed3 (n = 3, n_y = 1): (F, A K) is nearly uncontrollable (smallest singular value of [G, F G, F^2 G] is
    # 3e-3), so Var(g), the covariance of the backward summary, has condition number ~5e5. Conditioning on g
    # then loses digits: derivatives of quantities computed through an inverse of condition kappa carry errors
    # ~eps kappa^2 ~ 3e-5 relative (observed: the dense and recursive derivatives of single terms differ by up
    # to 8e-6 relative, finite differences move by 1e-6 with h). The tolerance is that bound, not 1e-7; it
    # still catches a wrong derivative (jnp.linalg.pinv's own rule was 1 % off here, see _pinv_psd).
    w = weights(6, (5, 9))
    for method in ("recursive", "dense"):

        def loss(A, C, Q, R, method=method):
            d = kalman.decomposition(kalman.from_state_space(A, C, Q, R), 9, method=method)
            return sum(jnp.sum(wi * term) for wi, term in zip(w, d, strict=True))

        check_gradient(loss, CASES["seed3 n3 ny1"], rtol=3e-5)


@pytest.mark.parametrize("case", ["seed2 n4 ny3"])
def test_reversal_matrix_gradient(x64, case):
    A, C, _, _ = CASES[case]
    num_steps = 7
    W = weights(7, (num_steps * C.shape[0],) * 2)

    def loss(A, C, Q, R):
        return jnp.sum(W * kalman.reversal_matrix(kalman.from_state_space(A, C, Q, R), num_steps))

    check_gradient(loss, CASES[case])


# ---------------------------------------------------------------------------------------------------------
# forward mode, jit, vmap, memory


@pytest.mark.parametrize("case", ["seed2 n4 ny3"])
def test_forward_mode_matches_reverse_mode(x64, case):
    args = [jnp.asarray(a) for a in CASES[case]]
    dirs = [jnp.asarray(d) for d in directions(args, SYMMETRIC, seed=11)]
    num_steps = 50
    functions = {
        "from_state_space": lambda *a: jnp.sum(kalman.from_state_space(*a).K),
        "entropy_production": lambda *a: kalman.entropy_production(kalman.from_state_space(*a), num_steps),
        "dense": lambda *a: kalman.entropy_production(kalman.from_state_space(*a), num_steps, method="dense"),
        "curve": lambda *a: jnp.sum(kalman.entropy_production_curve(kalman.from_state_space(*a), num_steps)),
        "rate": lambda *a: kalman.entropy_production_rate(kalman.from_state_space(*a)),
        "decomposition": lambda *a: jnp.sum(kalman.decomposition(kalman.from_state_space(*a), 9).M),
    }
    for name, f in functions.items():
        _, tangent = jax.jvp(f, tuple(args), tuple(dirs))
        grads = jax.grad(f, argnums=(0, 1, 2, 3))(*args)
        reverse = sum(jnp.vdot(g, d) for g, d in zip(grads, dirs, strict=True))
        np.testing.assert_allclose(float(tangent), float(reverse), rtol=1e-10, err_msg=name)


def test_traced_and_concrete_totals_agree(x64):
    # Concrete parameters use the compiled-once traced-length loop, traced ones the checkpointed scan: one value.
    for params in (kalman.from_state_space(**PAPER_2D), kalman.from_state_space(*make_state_space(7, 2, 2, 1.05))):
        for num_steps in (1, 2, 1000):
            concrete = float(kalman.entropy_production(params, num_steps))
            traced = float(jax.jit(lambda p, T=num_steps: kalman.entropy_production(p, T))(params))
            np.testing.assert_allclose(traced, concrete, rtol=1e-13, atol=1e-15)


def _model(theta):
    """A user's parameterisation of a 2-D state-space model (stable A by a tanh of its spectral scale)."""
    a, c, log_q, log_r = theta
    A = 0.9 * jnp.tanh(a)
    Q = jnp.diag(jnp.exp(log_q))
    R = jnp.diag(jnp.exp(log_r))
    return kalman.from_state_space(A, c, Q, R)


def test_user_loss_under_jit_vmap_grad(x64):
    target = 0.05

    def loss(theta):
        params = _model(theta)
        rate = kalman.entropy_production_rate(params)
        return (rate - target) ** 2 + 1e-3 * kalman.entropy_production(params, 64) / 64

    # Traced once: a second batch of new values with the same shapes must reuse the compiled gradient.
    batched_grad = jax.jit(jax.vmap(jax.grad(chex.assert_max_traces(loss, n=1))))
    rng = np.random.default_rng(0)

    def draw(batch):
        return (
            jnp.asarray(0.3 * rng.normal(size=(batch, 2, 2))),
            jnp.asarray(np.eye(2) + 0.3 * rng.normal(size=(batch, 2, 2))),
            jnp.asarray(0.1 * rng.normal(size=(batch, 2))),
            jnp.asarray(0.1 * rng.normal(size=(batch, 2))),
        )

    thetas = draw(3)
    grads = batched_grad(thetas)
    batched_grad(draw(3))
    for i in range(3):
        theta = tuple(t[i] for t in thetas)
        for g_batch, g_one in zip(grads, jax.grad(loss)(theta), strict=True):
            np.testing.assert_allclose(g_batch[i], g_one, rtol=1e-10, atol=1e-14)
    # And a finite-difference check of the user's gradient, for the first member.
    check_gradient(lambda *theta: loss(theta), [np.asarray(t[0]) for t in thetas], (False,) * 4)


def test_vmap_over_stable_and_unstable_models(x64):
    # A batch mixing a stable and an unstable A: under vmap both recursions run (a batched lax.cond); the
    # gradients must equal those of each model on its own, with no NaN leaking from the branch not taken.
    stable = kalman.from_state_space(*make_state_space(1, 2, 2))
    unstable = kalman.from_state_space(*make_state_space(7, 2, 2, 1.05))
    batch = jax.tree.map(lambda a, b: jnp.stack([a, b]), stable, unstable)

    def loss(params):
        return kalman.entropy_production(params, 30) + jnp.sum(kalman.entropy_production_curve(params, 30))

    grads = jax.jit(jax.vmap(jax.grad(loss)))(batch)
    for i, params in enumerate((stable, unstable)):
        one = jax.grad(loss)(params)
        for g_batch, g_one in zip(grads, one, strict=True):
            assert bool(jnp.all(jnp.isfinite(g_batch[i])))
            np.testing.assert_allclose(g_batch[i], g_one, rtol=1e-10, atol=1e-12)
    rates = jax.vmap(kalman.entropy_production_rate)(batch)  # under vmap the unstable A gives NaN, not a number
    assert np.isfinite(float(rates[0])) and np.isnan(float(rates[1]))


def test_gradient_memory_grows_like_sqrt_t():
    # Reverse mode through the checkpointed scan stores O(sqrt(T)) carries: from T = 1e4 to 1e6 XLA's temporary
    # buffers must grow far less than 100x (observed ~6.5x, 31 kB -> 204 kB for the 2-D example in float32),
    # and stay far below the ~52 bytes per step a stored carry per step would take.
    params = kalman.from_state_space(**PAPER_2D)
    sizes = {}
    for num_steps in (10**4, 10**6):
        grad = jax.jit(jax.grad(lambda p, T=num_steps: kalman.entropy_production(p, T)))
        sizes[num_steps] = grad.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert sizes[10**6] < 15 * sizes[10**4], sizes
    assert sizes[10**6] < 10**6 * 52 / 20, sizes


def test_float32_gradient_at_long_horizon():
    # In float32 the gradient keeps the accuracy of the value: dS/dtheta = T drate/dtheta + bounded terms.
    # Reference: the float64 gradient of the same (float32-rounded) model. Observed: at most 5e-7 of the largest
    # entry (T = 1e5 and 1e6, the 2-D example and a 4-state model); the old direct sum was off by 5e-3 in the
    # value alone at this T.
    num_steps = 10**5
    params32 = kalman.from_state_space(**PAPER_2D)
    g32 = jax.jit(jax.grad(lambda p: kalman.entropy_production(p, num_steps)))(params32)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float64), params32)
        g64 = jax.jit(jax.grad(lambda p: kalman.entropy_production(p, num_steps)))(params64)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == jnp.float32
        a, b = np.asarray(a, np.float64), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.max(np.abs(b)))
