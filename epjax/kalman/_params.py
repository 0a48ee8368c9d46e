"""Steady-state Kalman innovation form: parameters, the DARE, and validation (docs/mathematics.md §5, EP paper §6)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from epjax._checks import (
    as_real_array,
    check_finite,
    check_matrix,
    check_symmetric_positive_definite,
    check_symmetric_positive_semidefinite,
    is_concrete,
    spectral_radius,
)

Array = jax.Array


class Params(NamedTuple):
    """A Kalman innovation model in steady state (EP paper §6).

    Generation from ``xhat_1 = 0``::

        e_t ~ N(0, S);  y_t = C xhat_t + e_t;  xhat_{t+1} = A (xhat_t + K e_t)

    Attributes:
        A: ``[n, n]`` state transition.
        C: ``[n_y, n]`` observation matrix.
        K: ``[n, n_y]`` filter gain ``P C^T S^{-1}`` (the predictor gain is ``A K``).
        S: ``[n_y, n_y]`` innovation covariance ``C P C^T + R``, symmetric positive definite.
    """

    A: Array
    C: Array
    K: Array
    S: Array

    @property
    def state_dim(self) -> int:
        """``n``, the state dimension."""
        return int(np.shape(self.A)[0])

    @property
    def obs_dim(self) -> int:
        """``n_y``, the observation dimension."""
        return int(np.shape(self.C)[0])


def _float_dtype(*xs: Any):
    """The float dtype the arrays ``xs`` (already checked real by ``as_real_array``) are computed in."""
    dtype = jnp.result_type(*[jnp.asarray(x) for x in xs])  # canonical: float64 -> float32 without x64
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def as_params(params: Any, *, check_stable: bool = True) -> Params:
    """Convert ``params`` to a :class:`Params` of float arrays and validate it.

    Shapes are always checked; values (finiteness, ``S`` positive definite, a stable whitening filter
    ``A (I - K C)``) are checked when concrete, i.e. outside ``jit``.

    Args:
        params: a :class:`Params` (or anything with fields ``A, C, K, S``).
        check_stable: also require the whitening filter to be stable (spectral radius < 1).

    Returns:
        The validated :class:`Params`.
    """
    if not all(hasattr(params, f) for f in Params._fields):
        raise ValueError(f"`params` must be an epjax.kalman.Params(A, C, K, S), got {type(params).__name__}.")
    # Refuse None, strings, ragged lists, booleans and complex values before any conversion can cut them.
    fields = [as_real_array(f"params.{f}", getattr(params, f)) for f in Params._fields]
    dtype = _float_dtype(*fields)
    A, C, K, S = (jnp.asarray(x, dtype=dtype) for x in fields)
    check_matrix("params.A", A)
    n = A.shape[0]
    check_matrix("params.A", A, shape=(n, n))
    check_matrix("params.C", C, shape=(None, n))
    n_y = C.shape[0]
    check_matrix("params.K", K, shape=(n, n_y))
    check_matrix("params.S", S, shape=(n_y, n_y))
    for name, x in zip(("params.A", "params.C", "params.K", "params.S"), (A, C, K, S), strict=True):
        check_finite(name, x)
    # In the dtype S arrived in: a float32 S is symmetric to float32 rounding only, also when A is float64.
    check_symmetric_positive_definite("params.S", fields[3])
    if check_stable and is_concrete(A, C, K):
        rho = spectral_radius(np.asarray(A) @ (np.eye(n) - np.asarray(K) @ np.asarray(C)))
        if not rho < 1.0:
            raise ValueError(
                "`params` must have a stable whitening filter A (I - K C) (spectral radius < 1), got spectral "
                f"radius {rho:.6g}; this is not the innovation form of a Kalman filter."
            )
    return Params(A, C, K, S)


def stein(M: Array, N: Array, Q: Array) -> Array:
    """Solve the Stein equation ``X = M X N + Q`` for ``X`` ``[n, n]``, or for a stack of ``Q`` ``[k, n, n]``.

    Through the Kronecker form ``(I - N^T (x) M) vec X = vec Q`` (``vec`` stacks columns): one LU of an
    ``[n^2, n^2]`` matrix, shared by every right-hand side, fine for the small state dimensions of these
    models. The solve is linear in ``Q`` and differentiable (``jnp.linalg.solve``), so it also serves the
    implicit derivative of the DARE. The solution is unique when no product of an eigenvalue of ``M`` and one of
    ``N`` equals 1 (e.g. both stable).
    """
    n = M.shape[0]
    lhs = jnp.eye(n * n, dtype=M.dtype) - jnp.kron(N.T, M)
    rhs = jnp.swapaxes(Q, -1, -2).reshape(-1, n * n).T  # columns vec Q (column-major)
    X = jnp.linalg.solve(lhs, rhs).T.reshape(Q.shape)
    return jnp.swapaxes(X, -1, -2)


def _solve_dare(A: Array, C: Array, Q: Array, R: Array, max_iter: int = 64):
    """Structured doubling algorithm for the filtering DARE ``P = A (P - P C^T (C P C^T + R)^{-1} C P) A^T + Q``.

    Dual form of the control DARE with ``A_0 = A^T``, ``G_0 = C^T R^{-1} C``, ``H_0 = Q``; ``H_k -> P``
    quadratically when a stabilising solution exists.
    """
    n = A.shape[0]
    eye = jnp.eye(n, dtype=A.dtype)
    chol_r = jnp.linalg.cholesky(R)
    G0 = C.T @ jsl.cho_solve((chol_r, True), C)
    tol = 8 * jnp.finfo(A.dtype).eps

    def cond(state):
        k, _, _, _, change = state
        return (k < max_iter) & (change > tol)

    def body(state):
        k, Ak, G, H, _ = state
        W = eye + G @ H
        w_a = jnp.linalg.solve(W, Ak)
        w_g = jnp.linalg.solve(W, G)
        A_next = Ak @ w_a
        G_next = G + Ak @ w_g @ Ak.T
        H_next = H + Ak.T @ H @ w_a
        G_next = 0.5 * (G_next + G_next.T)
        H_next = 0.5 * (H_next + H_next.T)
        change = jnp.max(jnp.abs(H_next - H)) / jnp.maximum(jnp.max(jnp.abs(H_next)), jnp.finfo(A.dtype).tiny)
        return k + 1, A_next, G_next, H_next, change

    init = (jnp.int32(0), A.T, 0.5 * (G0 + G0.T), Q, jnp.asarray(jnp.inf, A.dtype))
    k, _, _, P, change = jax.lax.while_loop(cond, body, init)
    return P, k, change


@jax.custom_jvp
def _dare(A: Array, C: Array, Q: Array, R: Array) -> tuple[Array, Array]:
    """The stabilising DARE solution ``P`` and the doubling iteration's ``[iterations, last relative change]``.

    Differentiated implicitly (``_dare_jvp``), never through the iteration: reverse mode works although the
    doubling is a ``while_loop``, and the derivative is that of the exact solution.
    """
    P, iterations, change = _solve_dare(A, C, Q, R)
    return P, jnp.stack([iterations.astype(A.dtype), change])


@_dare.defjvp
def _dare_jvp(primals, tangents):
    """Tangent of the DARE from its linearisation (docs/mathematics.md §10.2).

    With ``S = C P C^T + R``, ``K = P C^T S^{-1}``, ``F = A (I - K C)`` and ``M = (I - K C) P`` (so that
    ``P = A M A^T + Q``), differentiating ``M = P - P C^T S^{-1} C P`` gives

        dM = (I - K C) dP (I - K C)^T + K dR K^T - (I - K C) P dC^T K^T - K dC P (I - K C)^T,

    hence the Stein equation ``dP = F dP F^T + E`` with

        E = dA M A^T + A M dA^T + dQ + A [K dR K^T - (I - K C) P dC^T K^T - K dC P (I - K C)^T] A^T.

    ``F`` is stable (the stabilising solution), so ``dP`` is unique; it is linear in the tangents, which is what
    reverse mode transposes.
    """
    A, C, Q, R = primals
    dA, dC, dQ, dR = tangents
    P, diagnostics = _dare(A, C, Q, R)
    n = A.shape[0]
    S = C @ P @ C.T + R
    K = jsl.cho_solve((jnp.linalg.cholesky(0.5 * (S + S.T)), True), C @ P).T
    I_KC = jnp.eye(n, dtype=A.dtype) - K @ C
    F = A @ I_KC
    M = I_KC @ P
    gain_terms = K @ dR @ K.T - I_KC @ P @ dC.T @ K.T - K @ dC @ P @ I_KC.T
    E = dA @ M @ A.T + A @ M @ dA.T + dQ + A @ gain_terms @ A.T
    dP = stein(F, F.T, 0.5 * (E + E.T))
    return (P, diagnostics), (0.5 * (dP + dP.T), jnp.zeros_like(diagnostics))


@jax.jit
def _innovation_form(A, C, Q, R):
    # The DARE only sees the symmetric parts of Q and R (exact no-op on symmetric input): derivatives with
    # respect to one off-diagonal entry are then those of the symmetric matrix, as finite differences see them.
    Q = 0.5 * (Q + Q.T)
    R = 0.5 * (R + R.T)
    P, diagnostics = _dare(A, C, Q, R)
    S = C @ P @ C.T + R
    S = 0.5 * (S + S.T)
    chol_s = jnp.linalg.cholesky(S)
    K = jsl.cho_solve((chol_s, True), C @ P).T  # K = P C^T S^{-1}, S symmetric
    return P, K, S, diagnostics[0], diagnostics[1]


def from_state_space(A: Any, C: Any, Q: Any, R: Any, *, return_covariance: bool = False):
    """Steady-state Kalman innovation model of ``x_{t+1} = A x_t + w_t, y_t = C x_t + v_t`` (docs/mathematics.md §5).

    Solves the DARE ``P = A (P - P C^T (C P C^T + R)^{-1} C P) A^T + Q`` by the structured doubling algorithm
    in JAX, then ``S = C P C^T + R`` and ``K = P C^T S^{-1}`` (Cholesky solves).

    Differentiable in every mode and under ``jit``/``vmap`` (values are then checked only when concrete):
    ``P`` is differentiated implicitly, ``dP = F dP F^T + E(dA, dC, dQ, dR)`` with ``F = A (I - K C)``
    (docs/mathematics.md §10), not through the doubling iteration. ``Q`` and ``R`` enter through their
    symmetric parts.

    Args:
        A: ``[n, n]`` state transition.
        C: ``[n_y, n]`` observation matrix.
        Q: ``[n, n]`` process-noise covariance, symmetric positive semi-definite.
        R: ``[n_y, n_y]`` observation-noise covariance, symmetric positive definite.
        return_covariance: also return the DARE solution ``P``.

    Returns:
        :class:`Params` ``(A, C, K, S)``, or ``(params, P)`` with ``return_covariance=True``.

    Raises:
        ValueError: on wrong shapes, non-finite entries, ``Q``/``R`` not symmetric positive (semi-)definite,
            no stabilising DARE solution, or an unstable whitening filter.

    >>> p = from_state_space([[0.9]], [[1.0]], [[1.0]], [[1.0]])
    >>> round(float(p.S[0, 0]), 6), round(float(p.K[0, 0]), 6)
    (2.4839, 0.597407)
    """
    # Refuse None, strings, ragged lists, booleans and complex values before any conversion can cut them.
    A, C, Q, R = (as_real_array(name, x) for name, x in (("A", A), ("C", C), ("Q", Q), ("R", R)))
    check_matrix("A", A)
    n = np.shape(A)[0]
    check_matrix("A", A, shape=(n, n))
    check_matrix("C", C, shape=(None, n))
    n_y = np.shape(C)[0]
    check_matrix("Q", Q, shape=(n, n))
    check_matrix("R", R, shape=(n_y, n_y))
    for name, x in (("A", A), ("C", C), ("Q", Q), ("R", R)):
        check_finite(name, x)
    # Symmetry is checked in the dtype the covariances arrived in: a float32 B @ B.T is symmetric to float32
    # rounding only, also when A is float64.
    check_symmetric_positive_semidefinite("Q", Q)
    check_symmetric_positive_definite("R", R)
    dtype = _float_dtype(A, C, Q, R)
    A, C, Q, R = (jnp.asarray(x, dtype=dtype) for x in (A, C, Q, R))
    P, K, S, iterations, change = _innovation_form(A, C, Q, R)
    params = Params(A, C, K, S)
    if is_concrete(P):
        P_np = np.asarray(P, dtype=np.float64)
        converged = bool(np.isfinite(float(change))) and float(change) <= 1e3 * float(jnp.finfo(dtype).eps)
        if not (converged and np.all(np.isfinite(P_np))) or np.min(np.linalg.eigvalsh(P_np)) < -1e-8 * max(
            1.0, float(np.max(np.abs(P_np)))
        ):
            raise ValueError(
                "The DARE for (A, C, Q, R) has no stabilising solution: the doubling iteration did not converge "
                f"(relative change {float(change):.3g} after {int(iterations)} iterations). (A, C) must be "
                "detectable and (A, Q^{1/2}) have no uncontrollable modes on the unit circle."
            )
        rho = spectral_radius(np.asarray(A) @ (np.eye(n) - np.asarray(K) @ np.asarray(C)))
        if not rho < 1.0:
            raise ValueError(
                "The DARE for (A, C, Q, R) has no stabilising solution: the whitening filter A (I - K C) has "
                f"spectral radius {rho:.6g} >= 1 (e.g. an unobservable or noise-free marginal mode)."
            )
    return (params, P) if return_covariance else params
