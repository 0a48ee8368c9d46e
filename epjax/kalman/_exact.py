"""Exact entropy production of Kalman innovation models (docs/mathematics.md §5, EP paper eqs. 71, 73).

The innovation reversal matrix, an O(T) recursion with O(n^2) memory, and the asymptotic rate; all of them
differentiable (docs/mathematics.md §10).

Notation: ``y = H e`` with ``H`` block lower-triangular Toeplitz, ``H_0 = I``, ``H_l = C A^l K``; ``J`` reverses
the order of the ``T`` blocks; ``R = H^{-1} J H`` maps forward to backward innovations. With ``S = L L^T``,

    S_y = 1/2 [ || (I_T (x) L^{-1}) R (I_T (x) L) ||_F^2 - T n_y ]                      (eq. 71)

Everything below works in whitened observation coordinates ``C <- L^{-1} C``, ``K <- K L``, ``S <- I``: a fixed
invertible map of every observation changes ``ln P(y)`` and ``ln P(reverse y)`` by the same Jacobian, so the
EP is unchanged, and the whitened Frobenius norm becomes the plain one.

The recursion and float32. Eq. 73 splits the EP into per-step contributions ``c_m = 1/2 [tr(Z_m Pi_{T+1-m}) +
tr Omega_m - n_y]`` (``m = 1..T``, time of the reversed sequence; ``Pi_tau = Cov(xhat_tau)``, ``Z_m`` and
``Omega_m`` from the backward recursions of ``_backward_step``). Summed as written, ``sum_m tr(...)`` and
``T n_y`` are two O(T) numbers whose difference is the EP: in float32 they cancel catastrophically. When
``A`` is stable the recursion instead carries only bounded or decaying quantities. With the stationary state
covariance ``Pbar = A (Pbar + K K^T) A^T`` one has ``Pi_tau - Pbar = -A^{tau-1} Pbar A^{(tau-1)T}``, so

    sum_m tr(Z_m (Pi_{T+1-m} - Pbar)) = -tr(Pbar V_T),   V_m = A^T V_{m-1} A + Z_m   (V bounded),
    S_y(T) = T rate + sum_m dc_m - 1/2 tr(Pbar V_T),
    dc_m = 1/2 [tr(dZ_m Pbar) + tr dOmega_m],

where ``rate = 1/2 [tr(Zbar Pbar) + tr Omegabar - n_y]`` is the closed-form asymptotic rate (exactly 0 for
``n_y = 1``) and ``dZ_m``, ``dOmega_m`` are expanded algebraically in the deviations ``dN_m = N_m - Nbar``
(``dN_{m+1} = F dN_m A``, homogeneous) and ``dRho_m = Rho_m - Rhobar``, which decay geometrically: no O(1)
quantities are subtracted inside the loop. The error is then that of ``T rate`` (the rate's relative error, a
few float32 ulps times the conditioning of the Stein equations) plus a bounded term. When ``A`` is not stable
(allowed: only the whitening filter ``A (I - K C)`` must be) there is no ``Pbar``, and the direct sum is used;
the choice is made in the graph (``lax.cond``), by whether the Stein solution of ``X = A X A^T + I`` has a
finite Cholesky factor (it is positive definite exactly when ``A`` is stable).

The documented (and tested) bound is ``1e-5`` relative for stable ``A`` with a rate that is not ~0, or with
``n_y = 1``; in general the error is about ``T |rate32 - rate|`` plus a bounded term, ``rate32`` being the float32
closed-form rate (a few ulps of ``n_y`` off). The measured errors are in docs/mathematics.md §11.

When the rate is 0 but ``n_y > 1`` (a reversible model with vector observations), float32 gives the closed-form
rate as a few 1e-8 instead of 0, so ``S_y(T)`` has an absolute error that grows like ``T |rate32|``, at most about
``T eps n_y`` (``eps = 1.2e-7``): use float64 for such models at large ``T``. For ``n_y = 1`` the rate is exactly
0 and the error stays bounded.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from epjax._checks import check_num_steps, is_concrete, spectral_radius
from epjax._linalg import mm
from epjax.kalman._linalg import DENSE_MAX_BYTES, block_toeplitz, check_dense_size, markov_parameters, whiten
from epjax.kalman._params import Params, as_params, stein

Array = jax.Array


class EntropyProduction(NamedTuple):
    """Exact EP with its per-step contributions (eq. 73).

    Attributes:
        total: ``S_y`` in nats.
        per_step: ``[T]`` contributions ``1/2 [tr(S^{-1} Sigma^B_s) - n_y]``, ``s = 1..T`` in the time of the
            reversed sequence; they sum to ``total``.
    """

    total: Array
    per_step: Array


# ---------------------------------------------------------------------------------------------------------
# dense: the reversal matrix


def _reversal_matrix(params: Params, num_steps: int) -> Array:
    n_y = params.C.shape[0]
    H = block_toeplitz(markov_parameters(params, num_steps))
    JH = jnp.flip(H.reshape(num_steps, n_y, num_steps * n_y), axis=0).reshape(H.shape)
    return jsl.solve_triangular(H, JH, lower=True, unit_diagonal=True)


def reversal_matrix(params: Params, num_steps: int, *, max_bytes: float = DENSE_MAX_BYTES) -> Array:
    """The innovation reversal matrix ``R = H^{-1} J H`` (EP paper §6), ``[T n_y, T n_y]``.

    ``R`` maps the forward innovations of a trajectory to the innovations the same filter produces on the
    reversed trajectory. ``H`` is unit block lower-triangular, so ``H^{-1}`` is applied by a triangular solve.
    Differentiable (reverse and forward mode) with respect to ``params``.

    Args:
        params: the innovation model.
        num_steps: ``T >= 1``.
        max_bytes: memory budget; sizes whose three dense ``[T n_y, T n_y]`` arrays (``H``, ``J H`` and ``R``)
            would exceed it are refused before anything is allocated. Default 2 GiB.

    Returns:
        ``R`` with rows and columns ordered (time, observation component).

    Raises:
        ValueError: on invalid ``params`` or ``num_steps``, or when ``T n_y`` is over the memory budget.

    >>> import jax.numpy as jnp
    >>> p = Params(A=jnp.eye(1) * 0.5, C=jnp.eye(1), K=jnp.eye(1), S=jnp.eye(1))
    >>> reversal_matrix(p, 2).tolist()
    [[0.5, 1.0], [0.75, -0.5]]
    """
    params = as_params(params)
    num_steps = check_num_steps(num_steps)
    check_dense_size(
        "the reversal matrix",
        num_steps,
        params.obs_dim,
        params.A.dtype,
        3,
        max_bytes,
        'For the entropy production use kalman.entropy_production(params, num_steps, method="recursive") '
        "(no dense matrix), or raise max_bytes.",
    )
    return jax.jit(_reversal_matrix, static_argnums=1)(params, num_steps)


@partial(jax.jit, static_argnames="num_steps")
def _dense(params: Params, num_steps: int) -> EntropyProduction:
    params = whiten(params)
    n_y = params.C.shape[0]
    R = _reversal_matrix(params, num_steps)
    rows = jnp.sum(R.reshape(num_steps, n_y, -1) ** 2, axis=(1, 2))  # tr(Sigma^B_s), S = I
    per_step = 0.5 * (rows - n_y)
    return EntropyProduction(jnp.sum(per_step), per_step)


# ---------------------------------------------------------------------------------------------------------
# the recursion: direct form (any A) and deviation form (stable A)


def _recursion_constants(params: Params):
    """Whitened constants of the recursion: ``F = A (I - K C)`` (whitening filter) and ``G = A K``."""
    n = params.A.shape[0]
    F = params.A @ (jnp.eye(n, dtype=params.A.dtype) - params.K @ params.C)
    return F, params.A @ params.K


def _backward_step(params: Params, F: Array, G: Array, N: Array, Rho: Array):
    """Advance the anti-causal part by one step (``m -> m+1``, i.e. one step further from the sequence's end).

    In original time ``tau = T + 1 - m`` the forward filter run on the reversed sequence carries the state
    ``xi_tau = N_m xhat_tau + eta_tau`` (``eta`` depends on ``e_tau..e_T`` only). ``N`` and the covariance
    ``Rho`` of the propagated future part follow Stein-type recursions; ``Omega`` is the covariance of the part
    of the backward innovation independent of the past.
    """
    A, C = params.A, params.C
    n_y = C.shape[0]
    D = mm(mm(F, N) + mm(G, C), G)
    ICD = jnp.eye(n_y, dtype=C.dtype) - mm(C, D)
    Omega_next = mm(ICD, ICD.T) + mm(mm(C, Rho), C.T)
    FDG = mm(F, D) + G
    Rho_next = mm(mm(F, Rho), F.T) + mm(FDG, FDG.T)
    N_next = mm(mm(F, N), A) + mm(mm(G, C), A)
    return N_next, Rho_next, Omega_next


def _Z(params: Params, N: Array) -> Array:
    """``Z_m = (I - N_m)^T C^T C (I - N_m)``: the quadratic form of the past state in ``tr Cov(e^B)``."""
    n = params.A.shape[0]
    CI = mm(params.C, jnp.eye(n, dtype=N.dtype) - N)
    return mm(CI.T, CI)


class _Stationary(NamedTuple):
    """Stationary (``m -> inf``) values of the recursion's quantities, whitened model, stable ``A``.

    Attributes:
        P: ``Pbar``, the stationary ``Cov(xhat)``: ``Pbar = A Pbar A^T + G G^T``.
        N: ``Nbar = F Nbar A + G C A``.
        Rho: ``Rhobar = F Rhobar F^T + FDG FDG^T``.
        ICD: ``I - C Dbar``, ``Dbar = (F Nbar + G C) G``.
        FDG: ``F Dbar + G``.
        M: ``C (I - Nbar)``, so that ``Zbar = M^T M``.
        Z: ``Zbar``.
        omega_excess: ``tr Omegabar - n_y``, formed without subtracting ``n_y``.
        rate: ``1/2 [tr(Zbar Pbar) + tr Omegabar - n_y]``, exactly 0 for ``n_y = 1``.
    """

    P: Array
    N: Array
    Rho: Array
    ICD: Array
    FDG: Array
    M: Array
    Z: Array
    omega_excess: Array
    rate: Array


def _stationary(params: Params) -> _Stationary:
    """The stationary regime from three Stein equations (whitened ``params``, ``A`` stable)."""
    A, C = params.A, params.C
    n, n_y = A.shape[0], C.shape[0]
    dtype = A.dtype
    F, G = _recursion_constants(params)
    P_bar = stein(A, A.T, G @ G.T)
    N_bar = stein(F, A, G @ C @ A)
    CD = C @ (F @ N_bar + G @ C) @ G
    FDG = F @ (F @ N_bar + G @ C) @ G + G
    Rho_bar = stein(F, F.T, FDG @ FDG.T)
    M = C @ (jnp.eye(n, dtype=dtype) - N_bar)
    # tr Omegabar - n_y = tr((I - CD)(I - CD)^T) - n_y + tr(C Rhobar C^T), expanded so that n_y cancels exactly.
    omega_excess = -2.0 * jnp.trace(CD) + jnp.sum(CD**2) + jnp.sum(C * (C @ Rho_bar))
    if n_y == 1:
        # A stationary scalar Gaussian process is time-reversible: the rate is 0 exactly (the closed form gives
        # round-off), and T * rate must not add T eps to the finite-T EP.
        rate = jnp.zeros((), dtype)
    else:
        rate = 0.5 * (jnp.sum(M * (M @ P_bar)) + omega_excess)
    ICD = jnp.eye(n_y, dtype=dtype) - CD
    return _Stationary(P_bar, N_bar, Rho_bar, ICD, FDG, M, M.T @ M, omega_excess, rate)


def _is_stable(A: Array) -> Array:
    """Whether ``A`` is stable (spectral radius < 1), as a traced boolean usable under ``jit`` on any backend.

    The Stein equation ``X = A X A^T + I`` has a positive definite solution exactly when ``A`` is stable
    (discrete Lyapunov theorem), so the test is a finite Cholesky factor of the Kronecker-form solution; a
    singular system (an eigenvalue product 1) gives non-finite entries, hence ``False`` too.
    """
    A = jax.lax.stop_gradient(A)  # a predicate: no derivative flows through it
    X = stein(A, A.T, jnp.eye(A.shape[0], dtype=A.dtype))
    return jnp.all(jnp.isfinite(jnp.linalg.cholesky(0.5 * (X + X.T))))


def _delta_Z(st: _Stationary, C: Array, dN: Array) -> Array:
    """``Z_m - Zbar`` from ``dN = N_m - Nbar``: ``C (I - N_m) = M - C dN``, expanded (no O(1) differences)."""
    CdN = mm(C, dN)
    cross = mm(st.M.T, CdN)
    return mm(CdN.T, CdN) - cross - cross.T


def _delta_step(params: Params, F: Array, G: Array, st: _Stationary, dN: Array, dRho: Array):
    """``_backward_step`` for the deviations from the stationary values: ``(dN, dRho) -> (dN', dRho')``.

    With ``dD = D_m - Dbar = F dN G``: ``dN' = F dN A`` (homogeneous),
    ``dRho' = F dRho F^T + FDG (F dD)^T + (F dD) FDG^T + (F dD)(F dD)^T``, and the trace of
    ``dOmega_{m+1} = Omega_{m+1} - Omegabar``:
    ``-2 tr((I - C Dbar)^T C dD) + ||C dD||_F^2 + tr(C dRho C^T)``. Returns ``(dN', dRho', tr dOmega_{m+1})``.
    """
    A, C = params.A, params.C
    dD = mm(mm(F, dN), G)
    CdD = mm(C, dD)
    FdD = mm(F, dD)
    tr_dOmega = -2.0 * jnp.sum(st.ICD * CdD) + jnp.sum(CdD**2) + jnp.sum(C * mm(C, dRho))
    cross = mm(st.FDG, FdD.T)
    dRho_next = mm(mm(F, dRho), F.T) + cross + cross.T + mm(FdD, FdD.T)
    return mm(mm(F, dN), A), dRho_next, tr_dOmega


def _deviation_setup(params: Params):
    """Recursion for stable ``A``: carry ``(dN_m, dRho_m, V_m, sum_{k<=m} dc_k)`` after ``m`` steps.

    ``S_y(m) = m rate + sum_{k<=m} dc_k - 1/2 tr(Pbar V_m)`` (module docstring).
    """
    st = _stationary(params)
    A, C = params.A, params.C
    F, G = _recursion_constants(params)
    dN = -st.N  # N_1 = 0
    init = (dN, G @ G.T - st.Rho, C.T @ C, 0.5 * (jnp.sum(_delta_Z(st, C, dN) * st.P) - st.omega_excess))

    def step(carry):
        dN, dRho, V, acc = carry
        dN, dRho, tr_dOmega = _delta_step(params, F, G, st, dN, dRho)
        dZ = _delta_Z(st, C, dN)
        V = mm(mm(A.T, V), A) + (st.Z + dZ)
        return dN, dRho, V, acc + 0.5 * (jnp.sum(dZ * st.P) + tr_dOmega)

    def value(carry, m):
        _, _, V, acc = carry
        return m * st.rate + acc - 0.5 * jnp.sum(st.P * V)

    return init, step, value


def _direct_setup(params: Params):
    """Recursion for any ``A`` (the sum of eq. 73 as written): carry ``(N, Rho, U, W, sum tr Omega)``."""
    A = params.A
    n, n_y = A.shape[0], params.C.shape[0]
    F, G = _recursion_constants(params)
    dtype = A.dtype
    KK = params.K @ params.K.T
    # sum_tau tr(Z_{T+1-tau} Pi_tau), Pi_tau = sum_{j=1}^{tau-1} A^j G0 A^jT (G0 = K K^T), by the adjoint
    # recursion U_{m+1} = A^T (U_m + W_m) A, W_m = sum_{k<=m} Z_k: one pass, O(n^2) memory, no stability needed.
    N = jnp.zeros((n, n), dtype)
    init = (N, G @ G.T, jnp.zeros((n, n), dtype), _Z(params, N), jnp.asarray(n_y, dtype))  # Omega_1 = S = I

    def step(carry):
        N, Rho, U, W, trace_omega = carry
        N, Rho_next, Omega = _backward_step(params, F, G, N, Rho)
        U = mm(mm(A.T, U + W), A)
        W = W + _Z(params, N)
        return N, Rho_next, U, W, trace_omega + jnp.trace(Omega)

    def value(carry, m):
        _, _, U, _, trace_omega = carry
        return 0.5 * (jnp.sum(U * KK) + trace_omega - m * n_y)

    return init, step, value


def _by_stability(params: Params, deviation, direct):
    """``deviation(p)`` when ``A`` is stable, ``direct(p)`` otherwise, of the whitened ``p`` (chosen in-graph).

    Under ``vmap`` with a batched predicate both branches are evaluated; the deviation branch then sees
    ``A = 0`` for the unstable members so that it stays finite (no NaN in their gradients).
    """
    params = whiten(params)
    stable = _is_stable(params.A)

    def guarded(p):
        return deviation(p._replace(A=jnp.where(stable, p.A, jnp.zeros_like(p.A))))

    return jax.lax.cond(stable, guarded, direct, params)


def _by_setup(params: Params, run):
    """``run(setup)`` with the deviation recursion's setup when ``A`` is stable, the direct one's otherwise."""
    return _by_stability(params, lambda p: run(_deviation_setup(p)), lambda p: run(_direct_setup(p)))


def checkpointed_scan(f, init, xs, length: int):
    """``lax.scan(f, init, xs, length=length)`` whose reverse-mode memory is ``O(sqrt(length))`` carries.

    The steps run in chunks of ``ceil(sqrt(length))`` under ``jax.checkpoint``, and each step is checkpointed
    too: the backward pass stores the carries at chunk boundaries, then, chunk by chunk, the carries of that
    chunk's steps, and recomputes each step's intermediates when it needs them, instead of storing every
    step's intermediates for the whole sequence. Outputs ``ys`` (if any) are stored as usual. The forward
    value is that of the plain scan.
    """
    f = jax.checkpoint(f, prevent_cse=False)  # inside scans CSE cannot merge the recomputation away
    if length <= 1:
        return jax.lax.scan(f, init, xs, length=length)
    chunk = math.isqrt(length - 1) + 1
    num_chunks, rest = divmod(length, chunk)
    split = num_chunks * chunk

    def run_chunk(carry, xs_chunk):
        return jax.lax.scan(f, carry, xs_chunk, length=chunk)

    head = jax.tree.map(lambda x: x[:split].reshape(num_chunks, chunk, *x.shape[1:]), xs)
    carry, ys = jax.lax.scan(jax.checkpoint(run_chunk, prevent_cse=False), init, head, length=num_chunks)
    ys = jax.tree.map(lambda y: y.reshape(split, *y.shape[2:]), ys)
    if rest:
        carry, ys_rest = jax.lax.scan(f, carry, jax.tree.map(lambda x: x[split:], xs), length=rest)
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_rest)
    return carry, ys


# Steps per inner scan of the traced-length loop: a scan with a known trip count runs this recursion faster per
# step on CPU than a loop whose trip count is only known at run time.
_ANY_LENGTH_CHUNK = 256


@jax.jit
def _recursive_any_length(params: Params, num_steps: Array) -> Array:
    # The horizon is a traced loop bound: sweeps over T compile once. Not reverse-differentiable (loops with a
    # traced trip count); entropy_production uses it for concrete parameters only.
    def run(setup):
        init, step, value = setup
        count = num_steps - 1

        def chunk(_, carry):
            return jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=_ANY_LENGTH_CHUNK)[0]

        carry = jax.lax.fori_loop(0, count // _ANY_LENGTH_CHUNK, chunk, init)
        carry = jax.lax.fori_loop(0, count % _ANY_LENGTH_CHUNK, lambda _, c: step(c), carry)
        return value(carry, num_steps.astype(params.A.dtype))

    return jnp.where(num_steps == 1, 0.0, _by_setup(params, run))  # T = 1: nothing to reverse


@partial(jax.jit, static_argnames="num_steps")
def _recursive(params: Params, num_steps: int) -> Array:
    # Static horizon: a checkpointed scan, reverse-differentiable with O(sqrt(T)) memory.
    if num_steps == 1:
        return jnp.zeros((), params.A.dtype)  # nothing to reverse

    def run(setup):
        init, step, value = setup
        carry, _ = checkpointed_scan(lambda c, _: (step(c), None), init, None, num_steps - 1)
        return value(carry, jnp.asarray(num_steps, params.A.dtype))

    return _by_setup(params, run)


@partial(jax.jit, static_argnames="num_steps")
def _recursive_curve(params: Params, num_steps: int) -> Array:
    dtype = params.A.dtype

    def run(setup):
        init, step, value = setup

        def body(carry, m):
            carry = step(carry)
            return carry, value(carry, m.astype(dtype))

        _, values = checkpointed_scan(body, init, jnp.arange(2, num_steps + 1, dtype=jnp.int32), num_steps - 1)
        return jnp.concatenate([jnp.zeros((1,), dtype), values])  # S_y(1) = 0: nothing to reverse

    return _by_setup(params, run)


def entropy_production_curve(params: Params, num_steps: int, *, method: str = "recursive") -> Array:
    """Exact EP for every horizon at once: ``[S_y(1), S_y(2), ..., S_y(T)]`` (eq. 71 for each T).

    ``method="recursive"`` (default): one pass of the recursion (O(T n^3) time, O(n^2) working memory): its
    state after ``m`` steps already determines ``S_y(m)``; for stable ``A`` in the float32-accurate form of the
    module docstring. Differentiable (reverse mode through a checkpointed scan: ``O(sqrt(T))`` stored carries
    besides the ``T`` outputs). ``method="associative"``: the same values by a cascade of associative scans
    (see :func:`entropy_production`), ``O(log T)`` depth, ``O(T n^2)`` memory. Compiles once per ``T``.

    Args:
        params: the innovation model.
        num_steps: the largest horizon ``T >= 1``.
        method: ``"recursive"`` or ``"associative"``.

    Returns:
        ``[T]`` array, entry ``t - 1`` the exact EP of trajectories of length ``t``.

    >>> from epjax.kalman import from_state_space
    >>> p = from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> [round(float(v), 5) for v in entropy_production_curve(p, 10)[4::5]]
    [0.25442, 0.45098]
    """
    params = as_params(params)
    num_steps = check_num_steps(num_steps)
    if method == "recursive":
        return _recursive_curve(params, num_steps)
    if method == "associative":
        return _associative_curve(params, num_steps)
    raise ValueError(f"`method` must be 'recursive' or 'associative', got {method!r}.")


def _deviation_per_step(params: Params, num_steps: int) -> EntropyProduction:
    """Per-step contributions for stable ``A``: ``c_m = rate + dc_m + 1/2 tr(Z_m (Pi_{T+1-m} - Pbar))``."""
    st = _stationary(params)
    A, C = params.A, params.C
    F, G = _recursion_constants(params)

    # Pi_tau - Pbar = A (Pi_{tau-1} - Pbar) A^T from -Pbar: decays, no O(1) difference (tau = 1..T, stored for the
    # pairing tau = T + 1 - m).
    def pi_step(dPi, _):
        return mm(mm(A, dPi), A.T), dPi

    _, dPi = checkpointed_scan(pi_step, -st.P, None, num_steps)

    def step(carry, dPi_tau):
        dN, dRho, tr_dOmega = carry
        dZ = _delta_Z(st, C, dN)
        excess = 0.5 * (jnp.sum(dZ * st.P) + tr_dOmega + jnp.sum((st.Z + dZ) * dPi_tau))  # c_m - rate
        return _delta_step(params, F, G, st, dN, dRho), excess

    init = (-st.N, G @ G.T - st.Rho, -st.omega_excess)  # N_1 = 0, Rho_1 = G G^T, Omega_1 = I
    _, excess = checkpointed_scan(step, init, jnp.flip(dPi, axis=0), num_steps)
    return EntropyProduction(num_steps * st.rate + jnp.sum(excess), st.rate + excess)


def _direct_per_step(params: Params, num_steps: int) -> EntropyProduction:
    A = params.A
    n, n_y = A.shape[0], params.C.shape[0]
    F, G = _recursion_constants(params)
    dtype = A.dtype
    KK = params.K @ params.K.T

    # Pi_tau = Cov(xhat_tau), tau = 1..T (stored: per-step output needs the pairing tau = T + 1 - m).
    def pi_step(Pi, _):
        return mm(mm(A, Pi + KK), A.T), Pi

    _, Pi = checkpointed_scan(pi_step, jnp.zeros((n, n), dtype), None, num_steps)

    def step(carry, Pi_tau):
        N, Rho, Omega = carry
        contribution = jnp.sum(_Z(params, N) * Pi_tau) + jnp.trace(Omega)
        return _backward_step(params, F, G, N, Rho), contribution

    init = (jnp.zeros((n, n), dtype), G @ G.T, jnp.eye(n_y, dtype=dtype))
    _, traces = checkpointed_scan(step, init, jnp.flip(Pi, axis=0), num_steps)
    per_step = 0.5 * (traces - n_y)
    return EntropyProduction(jnp.sum(per_step), per_step)


# ---------------------------------------------------------------------------------------------------------
# the same recursion, parallel in time
#
# The step above is not affine in its whole carry (``Rho`` and ``Omega`` are quadratic in ``N``), but it is a
# triangular cascade of affine recurrences with constant coefficients: ``N`` (or ``dN``) evolves on its own,
# ``X -> F X A + const``; given every ``N_m``, ``Rho`` is ``X -> F X F^T + u_m``; given ``N`` and ``Rho``, the
# Gramian-like ``V`` (or ``U``) is ``X -> A^T X A + u_m``, and the rest are prefix sums. Each stage is one
# associative scan over ``T`` steps (docs/mathematics.md §12), so the value is the recursion's to round-off.


def _matrix_affine_scan(P: Array, Q: Array, U: Array) -> Array:
    """All ``X_m = P X_{m-1} Q + U_m``, ``m = 0..T-1``, from ``X_{-1} = 0`` (so ``X_0 = U_0``): ``[T, n, n]``.

    ``jax.lax.associative_scan`` of the maps ``X -> P^k X Q^k + B`` under composition,
    ``(P1, Q1, B1) then (P2, Q2, B2) = (P2 P1, Q1 Q2, P2 B1 Q2 + B2)``: ``O(T n^3)`` work, ``O(log T)``
    depth, ``O(T n^2)`` memory. The initial state is ``U_0`` itself, so a scan of ``T`` maps loses nothing.
    """
    powers_p = jnp.broadcast_to(P, U.shape)
    powers_q = jnp.broadcast_to(Q, U.shape)

    def compose(earlier, later):
        P1, Q1, B1 = earlier
        P2, Q2, B2 = later
        return mm(P2, P1), mm(Q1, Q2), mm(mm(P2, B1), Q2) + B2

    return jax.lax.associative_scan(compose, (powers_p, powers_q, U))[2]


def _t(X: Array) -> Array:
    """Transpose of the last two axes (a stack of matrices)."""
    return jnp.swapaxes(X, -1, -2)


def _shifted(first: Array, rest: Array) -> Array:
    """``[first, rest_0, ..., rest_{T-2}]``: the input of step ``m`` is produced by the state at ``m - 1``."""
    return jnp.concatenate([first[None], rest[:-1]])


def _deviation_parallel(params: Params, num_steps: int):
    """Stable ``A``: the deviation recursion's per-step quantities for ``m = 1..T``, by three associative scans.

    Returns ``(st, dZ [T], c [T], V [T])`` with ``c_1 = 1/2 (<dZ_1, Pbar> - (tr Omegabar - n_y))``,
    ``c_m = 1/2 (<dZ_m, Pbar> + tr dOmega_m)`` (``m >= 2``), and ``V_m = A^T V_{m-1} A + Z_m`` from
    ``V_1 = C^T C``, as :func:`_deviation_setup` carries them.
    """
    st = _stationary(params)
    A, C = params.A, params.C
    F, G = _recursion_constants(params)
    T = num_steps
    zeros = jnp.zeros((T, *A.shape), A.dtype)
    dN = _matrix_affine_scan(F, A, zeros.at[0].set(-st.N))  # dN_1 = -Nbar (N_1 = 0), then homogeneous
    dD = mm(mm(F, dN), G)
    CdD, FdD = mm(C, dD), mm(F, dD)
    cross = mm(st.FDG, _t(FdD))
    dRho = _matrix_affine_scan(F, F.T, _shifted(G @ G.T - st.Rho, cross + _t(cross) + mm(FdD, _t(FdD))))
    # tr dOmega_{m+1} from (dN_m, dRho_m), m = 1..T-1
    tr_dOmega = (
        -2.0 * jnp.sum(st.ICD * CdD, axis=(-2, -1))
        + jnp.sum(CdD**2, axis=(-2, -1))
        + jnp.sum(C * mm(C, dRho), axis=(-2, -1))
    )[:-1]
    CdN = mm(C, dN)
    cross_z = mm(st.M.T, CdN)
    dZ = mm(_t(CdN), CdN) - cross_z - _t(cross_z)
    trace_zp = jnp.sum(dZ * st.P, axis=(-2, -1))
    c = 0.5 * (trace_zp + jnp.concatenate([-st.omega_excess[None], tr_dOmega]))
    return st, dZ, c, dN


def _deviation_values(params: Params, num_steps: int) -> Array:
    """``[S_y(1), ..., S_y(T)]`` for stable ``A`` (the deviation form of the module docstring), in parallel."""
    A, C = params.A, params.C
    st, dZ, c, _ = _deviation_parallel(params, num_steps)
    V = _matrix_affine_scan(A.T, A, jnp.concatenate([(C.T @ C)[None], st.Z + dZ[1:]]))
    m = jnp.arange(1, num_steps + 1, dtype=A.dtype)
    return m * st.rate + jnp.cumsum(c) - 0.5 * jnp.sum(st.P * V, axis=(-2, -1))


def _deviation_per_step_parallel(params: Params, num_steps: int) -> EntropyProduction:
    """:func:`_deviation_per_step` by associative scans."""
    A = params.A
    st, dZ, c, _ = _deviation_parallel(params, num_steps)
    T = num_steps
    dPi = _matrix_affine_scan(A, A.T, jnp.zeros((T, *A.shape), A.dtype).at[0].set(-st.P))  # Pi_tau - Pbar
    excess = c + 0.5 * jnp.sum((st.Z + dZ) * jnp.flip(dPi, axis=0), axis=(-2, -1))  # pairs tau = T + 1 - m
    return EntropyProduction(num_steps * st.rate + jnp.sum(excess), st.rate + excess)


def _direct_parallel(params: Params, num_steps: int):
    """Any ``A``: ``N_m``, ``Z_m`` and ``tr Omega_m`` for ``m = 1..T`` (the carry of :func:`_direct_setup`)."""
    A, C = params.A, params.C
    n, n_y = A.shape[0], C.shape[0]
    F, G = _recursion_constants(params)
    T = num_steps
    dtype = A.dtype
    GCA = G @ C @ A
    N = _matrix_affine_scan(F, A, jnp.broadcast_to(GCA, (T, n, n)).at[0].set(0.0))  # N_1 = 0
    FNGC = mm(F, N) + G @ C
    D = mm(FNGC, G)
    ICD = jnp.eye(n_y, dtype=dtype) - mm(C, D)
    FDG = mm(F, D) + G
    Rho = _matrix_affine_scan(F, F.T, _shifted(G @ G.T, mm(FDG, _t(FDG))))
    tr_omega = jnp.sum(ICD**2, axis=(-2, -1)) + jnp.sum(C * mm(C, Rho), axis=(-2, -1))  # tr Omega_{m+1}
    tr_omega = jnp.concatenate([jnp.full((1,), n_y, dtype), tr_omega[:-1]])  # Omega_1 = I
    CI = mm(C, jnp.eye(n, dtype=dtype) - N)
    return mm(_t(CI), CI), tr_omega


def _direct_values(params: Params, num_steps: int) -> Array:
    """``[S_y(1), ..., S_y(T)]`` for any ``A`` (the sum of eq. 73 as written), in parallel."""
    A = params.A
    n_y = params.C.shape[0]
    Z, tr_omega = _direct_parallel(params, num_steps)
    W = jnp.cumsum(Z, axis=0)
    # U_1 = 0, U_{m+1} = A^T (U_m + W_m) A
    U = _matrix_affine_scan(A.T, A, _shifted(jnp.zeros_like(A), mm(mm(A.T, W), A)))
    m = jnp.arange(1, num_steps + 1, dtype=A.dtype)
    KK = params.K @ params.K.T
    return 0.5 * (jnp.sum(U * KK, axis=(-2, -1)) + jnp.cumsum(tr_omega) - m * n_y)


def _direct_per_step_parallel(params: Params, num_steps: int) -> EntropyProduction:
    """:func:`_direct_per_step` by associative scans."""
    A = params.A
    n_y = params.C.shape[0]
    G = A @ params.K
    Z, tr_omega = _direct_parallel(params, num_steps)
    # Pi_1 = 0, Pi_{tau+1} = A Pi_tau A^T + G G^T
    Pi = _matrix_affine_scan(A, A.T, jnp.broadcast_to(G @ G.T, (num_steps, *A.shape)).at[0].set(0.0))
    per_step = 0.5 * (jnp.sum(Z * jnp.flip(Pi, axis=0), axis=(-2, -1)) + tr_omega - n_y)
    return EntropyProduction(jnp.sum(per_step), per_step)


@partial(jax.jit, static_argnames="num_steps")
def _associative_curve(params: Params, num_steps: int) -> Array:
    values = _by_stability(params, lambda p: _deviation_values(p, num_steps), lambda p: _direct_values(p, num_steps))
    return values.at[0].set(0.0)  # S_y(1) = 0: nothing to reverse


@partial(jax.jit, static_argnames="num_steps")
def _associative_per_step(params: Params, num_steps: int) -> EntropyProduction:
    return _by_stability(
        params,
        lambda p: _deviation_per_step_parallel(p, num_steps),
        lambda p: _direct_per_step_parallel(p, num_steps),
    )


@partial(jax.jit, static_argnames="num_steps")
def _recursive_per_step(params: Params, num_steps: int) -> EntropyProduction:
    return _by_stability(params, lambda p: _deviation_per_step(p, num_steps), lambda p: _direct_per_step(p, num_steps))


def entropy_production(
    params: Params,
    num_steps: int,
    *,
    method: str = "recursive",
    per_step: bool = False,
    max_bytes: float = DENSE_MAX_BYTES,
):
    """Exact entropy production ``S_y = KL(P || P o reverse)`` of a Kalman innovation model (EP paper eq. 71).

    Methods (equal to float64 round-off):

    * ``"dense"``: builds ``R = H^{-1} J H`` and evaluates the whitened Frobenius form of eq. 71;
      ``(T n_y)^2`` memory, ``O((T n_y)^3)`` time. Sizes over ``max_bytes`` are refused.
    * ``"recursive"``: the same number in ``O(T n^3)`` time and ``O(n^2)`` memory. The backward innovations
      are the causal whitening filter applied to the anti-causal ``J H J``; their covariances follow from
      Stein-type cross-covariance recursions, and the coupling of the two time directions is accumulated by
      an adjoint (finite-horizon Gramian) recursion, so no sequence is stored. For stable ``A`` the recursion
      carries deviations from the stationary regime, ``S_y(T) = T rate + bounded terms`` (module docstring),
      which keeps float32 accurate at large ``T``: relative error at most ``1e-5`` (docs/mathematics.md
      §11). For ``n_y > 1`` with a rate near 0 the absolute
      error grows like ``T eps n_y`` instead.
    * ``"associative"``: the recursion's value, parallel in time. Its step is not affine in the whole carry
      (``Rho`` and ``Omega`` are quadratic in ``N``) but is a cascade of affine recurrences with constant
      coefficients, ``N`` first, then ``Rho`` given every ``N_m``, then the Gramian term given both, each
      solved by one ``jax.lax.associative_scan`` (docs/mathematics.md §12): ``O(T n^3)`` work,
      ``O(log T)`` depth, but ``O(T n^2)`` memory (every step's matrices are stored). Same deviation form
      (hence float32 behaviour) as ``"recursive"`` for stable ``A``. For accelerators and long ``T``; on a
      CPU the recursion is faster (benchmarks/scan.py).

    Differentiable in reverse and forward mode with respect to ``params``, for every method, ``T`` and
    ``per_step``, under ``jit`` and ``vmap`` (docs/mathematics.md §10). With concrete ``params`` the recursive
    total is compiled once for all ``T`` (a loop with a traced trip count); under a transformation (``grad``,
    ``jit``, ``vmap``) it is a scan over ``T - 1`` steps in checkpointed chunks of ``~sqrt(T)``: one
    compilation per ``T``, reverse-mode memory ``O(sqrt(T) n^2)``.

    Args:
        params: the innovation model (stable whitening filter).
        num_steps: ``T >= 1`` (at most ``2**31 - 1``).
        method: ``"recursive"`` (default), ``"associative"`` or ``"dense"``.
        per_step: also return the per-step contributions of eq. 73 (the recursive method then stores
            ``T`` state covariances).
        max_bytes: memory budget of the dense method: sizes whose three dense ``[T n_y, T n_y]`` arrays would
            exceed it are refused before anything is allocated. Default 2 GiB.

    Returns:
        The EP in nats as a scalar array, or an :class:`EntropyProduction` ``(total, per_step)`` when
        ``per_step=True``.

    Raises:
        ValueError: on invalid ``params``, ``num_steps`` or ``method``, or a dense size over ``max_bytes``.

    >>> from epjax.kalman import from_state_space
    >>> p = from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> round(float(entropy_production(p, 5)), 5)
    0.25442
    """
    params = as_params(params)
    num_steps = check_num_steps(num_steps)
    if method == "dense":
        check_dense_size(
            'method="dense"',
            num_steps,
            params.obs_dim,
            params.A.dtype,
            3,
            max_bytes,
            'Use method="recursive" (the same value in O(T n^3) time and O(n^2) memory), or raise max_bytes.',
        )
        result = _dense(params, num_steps)
        return result if per_step else result.total
    if method == "recursive":
        if per_step:
            return _recursive_per_step(params, num_steps)
        if is_concrete(params):
            return _recursive_any_length(params, jnp.asarray(num_steps, dtype=jnp.int32))
        return _recursive(params, num_steps)
    if method == "associative":
        if per_step:
            return _associative_per_step(params, num_steps)
        return _associative_curve(params, num_steps)[-1]
    raise ValueError(f"`method` must be 'recursive', 'associative' or 'dense', got {method!r}.")


@jax.jit
def _rate(params: Params) -> Array:
    """Closed-form rate of a whitened-or-not model; NaN when ``A`` is not stable (no stationary regime)."""
    params = whiten(params)
    stable = _is_stable(params.A)
    st = _stationary(params._replace(A=jnp.where(stable, params.A, jnp.zeros_like(params.A))))
    return jnp.where(stable, st.rate, jnp.nan)


def entropy_production_rate(params: Params) -> Array:
    """Asymptotic EP per step, ``lim_{T -> inf} S_y(T) / T`` (docs/mathematics.md §5), in closed form.

    It equals the spectral KL rate ``(1/4 pi) int [tr(f(w)^{-1} f(w)^T) - n_y] dw`` with ``f = G S G^*``,
    ``G(z) = I + C A (zI - A)^{-1} K``: the per-step covariance of the backward innovations in the stationary
    regime, ``1/2 [tr(Zbar Pbar) + tr Omegabar - n_y]``, from three Stein equations (the stationary state
    covariance, the stationary ``N``, the stationary propagated-future covariance). A stationary scalar
    Gaussian process is time-reversible (its autocovariance is even), so for ``n_y = 1`` the rate is exactly 0
    and is returned as such. Differentiable (reverse and forward mode), under ``jit`` and ``vmap``.

    Args:
        params: the innovation model; ``A`` must be stable (the process must have a stationary regime).

    Returns:
        The rate in nats per step, a scalar array. Under ``jit``/``vmap``, where ``A`` cannot be checked, a
        model with unstable ``A`` gives NaN.

    Raises:
        ValueError: on invalid ``params``, or (concrete ``params``) an unstable ``A``.

    >>> import jax.numpy as jnp
    >>> from epjax.kalman import from_state_space
    >>> p = from_state_space(jnp.array([[0.8, 0.3], [0.0, 0.5]]), jnp.array([[1.0, 0.5], [0.0, 1.0]]),
    ...                      jnp.eye(2), jnp.eye(2))
    >>> round(float(entropy_production_rate(p)), 4)
    0.0654
    """
    params = as_params(params)
    if is_concrete(params.A):
        rho = spectral_radius(params.A)
        if not rho < 1.0:
            raise ValueError(
                f"`params.A` must be stable (spectral radius < 1) for a stationary EP rate, got spectral radius "
                f"{rho:.6g}; the EP of a non-stationary model has no finite per-step limit."
            )
    return _rate(params)


def _rate_closed_form(params: Params) -> Array:
    """The closed-form rate without the scalar shortcut (used by tests to check it is 0 for ``n_y = 1``)."""
    params = whiten(as_params(params))
    st = _stationary(params)
    return 0.5 * (jnp.sum(st.M * (st.M @ st.P)) + st.omega_excess)
