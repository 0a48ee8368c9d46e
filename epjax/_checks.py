"""Boundary validation: clear ``ValueError`` messages naming the argument, the expectation and what arrived.

Value checks (finiteness, positive definiteness, stability) need concrete arrays; under ``jax.jit`` the
arguments are tracers and only static facts (shapes, dtypes) can be checked. ``is_concrete`` tells which.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs: Any) -> bool:
    """True when every leaf of ``xs`` holds a value (not a tracer inside ``jit``/``vmap``)."""
    for leaf in jax.tree_util.tree_leaves(xs):
        if isinstance(leaf, jax.core.Tracer):
            return False
    return True


def describe(x: Any) -> str:
    """Short description of an array-like for error messages: shape and dtype, or the value if scalar."""
    try:
        arr = np.asarray(x)
    except Exception:  # noqa: BLE001 - anything unconvertible is described by its type
        return f"an object of type {type(x).__name__}"
    if arr.ndim == 0:
        return f"{arr.item()!r}"
    return f"an array of shape {arr.shape} and dtype {arr.dtype}"


INT32_MAX = 2**31 - 1


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise when it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise when it is not a finite real number ``> 0`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r} of type {type(value).__name__}.")
    if not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return float(value)


def check_dtype_available(dtype: Any, *, name: str = "dtype") -> None:
    """Refuse a 64-bit dtype while JAX runs in 32-bit mode (JAX would silently compute in float32)."""
    if jax.dtypes.canonicalize_dtype(np.dtype(dtype)) != np.dtype(dtype):
        raise ValueError(f"`{name}` = {str(np.dtype(dtype))!r} needs 64-bit JAX: use `with jax.enable_x64(True):`.")


def check_num_steps(value: Any, *, name: str = "num_steps") -> int:
    """A sequence length ``T``: an integer in ``[1, 2**31 - 1]`` (JAX indexes time steps with int32)."""
    if not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value > INT32_MAX:
        raise ValueError(
            f"`{name}` must be at most 2**31 - 1 = {INT32_MAX} (time steps are indexed with int32), got {value}."
        )
    return check_positive_int(name, value)


def as_real_array(name: str, x: Any) -> Any:
    """``x`` as an array of real numbers, or a ``ValueError`` naming ``name`` and what arrived.

    Refuses ``None``, strings, ragged nested lists, objects and booleans, and complex values (which would
    otherwise be silently cut to their real part). Integers are accepted (they are cast to a float dtype by the
    caller). JAX arrays and tracers are returned unchanged after the dtype check.
    """
    if isinstance(x, jax.core.Tracer) or isinstance(x, jax.Array):
        dtype = x.dtype
    else:
        if x is None or isinstance(x, (str, bytes)):
            raise ValueError(f"`{name}` must be an array of real numbers, got {type(x).__name__} {x!r:.40}.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", np.exceptions.VisibleDeprecationWarning)
                arr = np.asarray(x)
        except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning):
            raise ValueError(
                f"`{name}` must be an array of real numbers, got a ragged or non-numeric {type(x).__name__} "
                "(nested lists must have rows of equal length)."
            ) from None
        dtype = arr.dtype
        x = arr
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"`{name}` must be real, got complex dtype {dtype} (complex models are not supported; the imaginary "
            "part would be lost)."
        )
    if dtype == np.bool_ or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"`{name}` must be an array of real numbers, got dtype {dtype}.")
    return x


def check_key(key: Any, *, name: str = "key") -> Any:
    """Raise unless ``key`` is one ``jax.random`` key: ``jax.random.key(seed)`` or a legacy uint32 ``[2]`` key."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if np.ndim(key) != 0:
            raise ValueError(f"`{name}` must be a single jax.random key, got a batch of shape {np.shape(key)}.")
        return key
    if dtype is not None and dtype == np.uint32 and np.shape(key) == (2,):
        return key  # jax.random.PRNGKey(seed)
    got = describe(key) if dtype is not None else f"an object of type {type(key).__name__}"
    raise ValueError(f"`{name}` must be a jax.random key (e.g. jax.random.key(0)), got {got}.")


def check_finite(name: str, x: Any) -> None:
    """Raise when a concrete array has NaN or infinite entries."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` must have finite entries, got {bad} non-finite entries in {describe(arr)}.")


def check_matrix(name: str, x: Any, *, shape: tuple[int | None, int | None] | None = None) -> None:
    """Raise unless ``x`` is a 2-D real array (of ``shape``, where given, ``None`` meaning any)."""
    x = as_real_array(name, x)
    ndim = np.ndim(x)
    if ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D matrix, got {describe(x)}.")
    if shape is not None:
        actual = np.shape(x)
        for want, got in zip(shape, actual, strict=True):
            if want is not None and want != got:
                raise ValueError(f"`{name}` must have shape {_shape_str(shape)}, got shape {actual}.")


def _symmetric_spectrum(name: str, x: Any) -> tuple[float, float, float]:
    """``(smallest eigenvalue, scale, tolerance)`` of a concrete square matrix, after checking its symmetry."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {arr.shape}.")
    scale = max(float(np.max(np.abs(arr))), np.finfo(np.float64).tiny)
    tolerance = _symmetry_tolerance(x)
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > tolerance * scale:
        raise ValueError(f"`{name}` must be symmetric, got max |{name} - {name}^T| = {asym:.3g}.")
    return float(np.min(np.linalg.eigvalsh(0.5 * (arr + arr.T)))), scale, tolerance


def check_symmetric_positive_definite(name: str, x: Any) -> None:
    """Raise unless the concrete matrix ``x`` is symmetric positive definite."""
    if not is_concrete(x):
        return
    eig_min, _, _ = _symmetric_spectrum(name, x)
    if eig_min <= 0.0:
        raise ValueError(f"`{name}` must be positive definite, got smallest eigenvalue {eig_min:.3g}.")


def check_symmetric_positive_semidefinite(name: str, x: Any) -> None:
    """Raise unless the concrete matrix ``x`` is symmetric positive semi-definite."""
    if not is_concrete(x):
        return
    eig_min, scale, tolerance = _symmetric_spectrum(name, x)
    if eig_min < -tolerance * scale:
        raise ValueError(f"`{name}` must be positive semi-definite, got smallest eigenvalue {eig_min:.3g}.")


def _symmetry_tolerance(x: Any) -> float:
    """Relative tolerance of the symmetry and semi-definiteness checks, from the matrix's own dtype.

    ``1e-10`` for float64 and ``8 eps`` (about ``1e-6``) for float32: a covariance computed in float32 (``B @ B.T``,
    a sum of outer products) is symmetric, and its zero eigenvalues zero, only to its own rounding.
    """
    dtype = np.asarray(x).dtype
    eps = float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)
    return max(1e-10, 8 * eps)


def spectral_radius(x: Any) -> float:
    """Largest eigenvalue modulus of a concrete square matrix."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(x, dtype=np.float64)))))


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
