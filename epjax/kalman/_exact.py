"""Exact entropy production of Kalman innovation models (SPEC §5, EP paper eqs. 71, 73).

The innovation reversal matrix, an O(T) recursion with O(n^2) memory, and the asymptotic rate.

Notation: ``y = H e`` with ``H`` block lower-triangular Toeplitz, ``H_0 = I``, ``H_l = C A^l K``; ``J`` reverses
the order of the ``T`` blocks; ``R = H^{-1} J H`` maps forward to backward innovations. With ``S = L L^T``,

    S_y = 1/2 [ || (I_T (x) L^{-1}) R (I_T (x) L) ||_F^2 - T n_y ]                      (eq. 71)

Everything below works in whitened observation coordinates ``C <- L^{-1} C``, ``K <- K L``, ``S <- I``: a fixed
invertible map of every observation changes ``ln P(y)`` and ``ln P(reverse y)`` by the same Jacobian, so the
EP is unchanged, and the whitened Frobenius norm becomes the plain one.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from epjax._checks import check_positive_int, is_concrete, spectral_radius
from epjax._linalg import mm
from epjax.kalman._params import Params, as_params

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


def _whiten(params: Params) -> Params:
    """Innovation form of ``L^{-1} y``: ``C <- L^{-1} C``, ``K <- K L``, ``S <- I``."""
    chol = jnp.linalg.cholesky(params.S)
    C = jsl.solve_triangular(chol, params.C, lower=True)
    K = params.K @ chol
    return Params(params.A, C, K, jnp.eye(params.S.shape[0], dtype=params.S.dtype))


def _markov_parameters(params: Params, num_steps: int) -> Array:
    """``H_l`` for ``l = 0..T-1``: ``H_0 = I``, ``H_l = C A^l K``; shape ``[T, n_y, n_y]``."""
    n_y = params.C.shape[0]

    def step(CA, _):
        return CA @ params.A, CA @ params.K

    _, CAK = jax.lax.scan(step, params.C @ params.A, None, length=num_steps - 1)  # C A^l K, l = 1..T-1
    return jnp.concatenate([jnp.eye(n_y, dtype=params.A.dtype)[None], CAK], axis=0)


def _block_toeplitz(blocks: Array) -> Array:
    """Block lower-triangular Toeplitz ``[T n, T n]`` with block ``(t, s) = blocks[t - s]`` for ``t >= s``."""
    num_steps, n, _ = blocks.shape
    lag = jnp.arange(num_steps)[:, None] - jnp.arange(num_steps)[None, :]
    full = jnp.where((lag >= 0)[:, :, None, None], blocks[jnp.clip(lag, 0)], 0.0)  # [T, T, n, n]
    return full.transpose(0, 2, 1, 3).reshape(num_steps * n, num_steps * n)


def _reversal_matrix(params: Params, num_steps: int) -> Array:
    n_y = params.C.shape[0]
    H = _block_toeplitz(_markov_parameters(params, num_steps))
    JH = jnp.flip(H.reshape(num_steps, n_y, num_steps * n_y), axis=0).reshape(H.shape)
    return jsl.solve_triangular(H, JH, lower=True, unit_diagonal=True)


def reversal_matrix(params: Params, num_steps: int) -> Array:
    """The innovation reversal matrix ``R = H^{-1} J H`` (EP paper §6), ``[T n_y, T n_y]``.

    ``R`` maps the forward innovations of a trajectory to the innovations the same filter produces on the
    reversed trajectory. ``H`` is unit block lower-triangular, so ``H^{-1}`` is applied by a triangular solve.

    Args:
        params: the innovation model.
        num_steps: ``T >= 1``.

    Returns:
        ``R`` with rows and columns ordered (time, observation component).

    >>> import jax.numpy as jnp
    >>> p = Params(A=jnp.eye(1) * 0.5, C=jnp.eye(1), K=jnp.eye(1), S=jnp.eye(1))
    >>> reversal_matrix(p, 2).tolist()
    [[0.5, 1.0], [0.75, -0.5]]
    """
    params = as_params(params)
    num_steps = check_positive_int("num_steps", num_steps)
    return jax.jit(_reversal_matrix, static_argnums=1)(params, num_steps)


@partial(jax.jit, static_argnames="num_steps")
def _dense(params: Params, num_steps: int) -> EntropyProduction:
    params = _whiten(params)
    n_y = params.C.shape[0]
    R = _reversal_matrix(params, num_steps)
    rows = jnp.sum(R.reshape(num_steps, n_y, -1) ** 2, axis=(1, 2))  # tr(Sigma^B_s), S = I
    per_step = 0.5 * (rows - n_y)
    return EntropyProduction(jnp.sum(per_step), per_step)


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


def _recursive_setup(params: Params):
    params = _whiten(params)
    A = params.A
    n, n_y = A.shape[0], params.C.shape[0]
    F, G = _recursion_constants(params)
    dtype = A.dtype
    KK = params.K @ params.K.T
    # sum_tau tr(Z_{T+1-tau} Pi_tau), Pi_tau = sum_{j=1}^{tau-1} A^j G0 A^jT (G0 = K K^T), by the adjoint
    # recursion U_{m+1} = A^T (U_m + W_m) A, W_m = sum_{k<=m} Z_k: one pass, O(n^2) memory, no stability needed.
    # Nothing in the recursion depends on T, so after m steps the carry holds the exact S_y(m).
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


@jax.jit
def _recursive(params: Params, num_steps: Array) -> Array:
    # The horizon is a traced loop bound: sweeps over T compile once.
    init, step, value = _recursive_setup(params)
    carry = jax.lax.fori_loop(1, num_steps, lambda _, c: step(c), init)
    return value(carry, num_steps.astype(params.A.dtype))


@partial(jax.jit, static_argnames="num_steps")
def _recursive_curve(params: Params, num_steps: int) -> Array:
    init, step, value = _recursive_setup(params)

    def body(carry, m):
        carry = step(carry)
        return carry, value(carry, m + 1)

    _, values = jax.lax.scan(body, init, jnp.arange(1, num_steps, dtype=params.A.dtype))
    return jnp.concatenate([value(init, 1)[None], values])


def entropy_production_curve(params: Params, num_steps: int) -> Array:
    """Exact EP for every horizon at once: ``[S_y(1), S_y(2), ..., S_y(T)]`` (eq. 71 for each T).

    One pass of the ``"recursive"`` method (O(T n^3) time, O(n^2) working memory): its state after ``m``
    steps already determines ``S_y(m)``.

    Args:
        params: the innovation model.
        num_steps: the largest horizon ``T >= 1``.

    Returns:
        ``[T]`` array, entry ``t - 1`` the exact EP of trajectories of length ``t``.

    >>> from epjax.kalman import from_state_space
    >>> p = from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> [round(float(v), 5) for v in entropy_production_curve(p, 10)[4::5]]
    [0.25442, 0.45098]
    """
    params = as_params(params)
    num_steps = check_positive_int("num_steps", num_steps)
    return _recursive_curve(params, num_steps)


@partial(jax.jit, static_argnames="num_steps")
def _recursive_per_step(params: Params, num_steps: int) -> EntropyProduction:
    params = _whiten(params)
    A, C = params.A, params.C
    n, n_y = A.shape[0], C.shape[0]
    F, G = _recursion_constants(params)
    dtype = A.dtype
    KK = params.K @ params.K.T

    # Pi_tau = Cov(xhat_tau), tau = 1..T (stored: per-step output needs the pairing tau = T + 1 - m).
    def pi_step(Pi, _):
        return mm(mm(A, Pi + KK), A.T), Pi

    _, Pi = jax.lax.scan(pi_step, jnp.zeros((n, n), dtype), None, length=num_steps)

    def step(carry, Pi_tau):
        N, Rho, Omega = carry
        contribution = jnp.sum(_Z(params, N) * Pi_tau) + jnp.trace(Omega)
        return _backward_step(params, F, G, N, Rho), contribution

    init = (jnp.zeros((n, n), dtype), G @ G.T, jnp.eye(n_y, dtype=dtype))
    _, traces = jax.lax.scan(step, init, jnp.flip(Pi, axis=0))
    per_step = 0.5 * (traces - n_y)
    return EntropyProduction(jnp.sum(per_step), per_step)


def entropy_production(
    params: Params, num_steps: int, *, method: str = "recursive", per_step: bool = False
):
    """Exact entropy production ``S_y = KL(P || P o reverse)`` of a Kalman innovation model (EP paper eq. 71).

    Methods (equal to float64 round-off):

    * ``"dense"``: builds ``R = H^{-1} J H`` and evaluates the whitened Frobenius form of eq. 71;
      ``(T n_y)^2`` memory, ``O((T n_y)^3)`` time.
    * ``"recursive"``: the same number in ``O(T n^3)`` time and ``O(n^2)`` memory. The backward innovations
      are the causal whitening filter applied to the anti-causal ``J H J``; their covariances follow from
      Stein-type cross-covariance recursions, and the coupling of the two time directions is accumulated by
      an adjoint (finite-horizon Gramian) recursion, so no sequence is stored.

    Args:
        params: the innovation model (stable whitening filter).
        num_steps: ``T >= 1``.
        method: ``"recursive"`` (default) or ``"dense"``.
        per_step: also return the per-step contributions of eq. 73 (the recursive method then stores
            ``T`` state covariances).

    Returns:
        The EP in nats as a scalar array, or an :class:`EntropyProduction` ``(total, per_step)`` when
        ``per_step=True``.

    >>> from epjax.kalman import from_state_space
    >>> p = from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> round(float(entropy_production(p, 5)), 5)
    0.25442
    """
    params = as_params(params)
    num_steps = check_positive_int("num_steps", num_steps)
    if method == "dense":
        result = _dense(params, num_steps)
        return result if per_step else result.total
    if method == "recursive":
        if per_step:
            return _recursive_per_step(params, num_steps)
        return _recursive(params, jnp.asarray(num_steps, dtype=jnp.int32 if num_steps < 2**31 else jnp.int64))
    raise ValueError(f"`method` must be 'dense' or 'recursive', got {method!r}.")


def _stein(M: Array, N: Array, Q: Array) -> Array:
    """Solve ``X = M X N + Q`` (``[n, n]``) through its Kronecker form ``(I - N^T (x) M) vec X = vec Q``."""
    n = M.shape[0]
    lhs = jnp.eye(n * n, dtype=M.dtype) - jnp.kron(N.T, M)
    return jnp.linalg.solve(lhs, Q.reshape(-1, order="F")).reshape(n, n, order="F")


@jax.jit
def _rate(params: Params) -> Array:
    params = _whiten(params)
    A, C = params.A, params.C
    n_y = C.shape[0]
    F, G = _recursion_constants(params)
    P_bar = _stein(A, A.T, G @ G.T)  # stationary Cov(xhat)
    N = _stein(F, A, G @ C @ A)
    D = (F @ N + G @ C) @ G
    FDG = F @ D + G
    Rho = _stein(F, F.T, FDG @ FDG.T)
    ICD = jnp.eye(n_y, dtype=A.dtype) - C @ D
    Omega = ICD @ ICD.T + C @ Rho @ C.T
    return 0.5 * (jnp.sum(_Z(params, N) * P_bar) + jnp.trace(Omega) - n_y)


def entropy_production_rate(params: Params) -> Array:
    """Asymptotic EP per step, ``lim_{T -> inf} S_y(T) / T`` (SPEC §5), in closed form.

    It equals the spectral KL rate ``(1/4 pi) int [tr(f(w)^{-1} f(w)^T) - n_y] dw`` with ``f = G S G^*``,
    ``G(z) = I + C A (zI - A)^{-1} K``: the per-step covariance of the backward innovations in the stationary
    regime, from three Stein equations (the stationary state covariance, the stationary ``N``, the stationary
    propagated-future covariance). A stationary scalar Gaussian process is time-reversible (its
    autocovariance is even), so for ``n_y = 1`` the rate is exactly 0 and is returned as such.

    Args:
        params: the innovation model; ``A`` must be stable (the process must have a stationary regime).

    Returns:
        The rate in nats per step, a scalar array.

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
    if params.C.shape[0] == 1:
        return jnp.zeros((), params.A.dtype)
    return _rate(params)


def _rate_closed_form(params: Params) -> Array:
    """The closed-form rate without the scalar shortcut (used by tests to check it is 0 for ``n_y = 1``)."""
    return _rate(as_params(params))
