"""Boundary validation: clear ``ValueError`` messages naming the argument, the expectation and what arrived.

Value checks (finiteness, positive definiteness, stability) need concrete arrays; under ``jax.jit`` the
arguments are tracers and only static facts (shapes, dtypes) can be checked. ``is_concrete`` tells which.
"""

from __future__ import annotations

from typing import Any

import jax
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


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise when it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_finite(name: str, x: Any) -> None:
    """Raise when a concrete array has NaN or infinite entries."""
    if not is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"`{name}` must have finite entries, got {bad} non-finite entries in {describe(arr)}.")


def check_matrix(name: str, x: Any, *, shape: tuple[int | None, int | None] | None = None) -> None:
    """Raise unless ``x`` is a 2-D floating array (of ``shape``, where given, ``None`` meaning any)."""
    ndim = np.ndim(x)
    if ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D matrix, got {describe(x)}.")
    if shape is not None:
        actual = np.shape(x)
        for want, got in zip(shape, actual, strict=True):
            if want is not None and want != got:
                raise ValueError(f"`{name}` must have shape {_shape_str(shape)}, got shape {actual}.")


def check_symmetric_positive_definite(name: str, x: Any) -> None:
    """Raise unless the concrete matrix ``x`` is symmetric positive definite."""
    if not is_concrete(x):
        return
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {arr.shape}.")
    scale = max(float(np.max(np.abs(arr))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(arr - arr.T)))
    tol = 1e-6 if np.asarray(x).dtype == np.float32 else 1e-10
    if asym > tol * scale:
        raise ValueError(f"`{name}` must be symmetric, got max |{name} - {name}^T| = {asym:.3g}.")
    eig_min = float(np.min(np.linalg.eigvalsh(0.5 * (arr + arr.T))))
    if eig_min <= 0.0:
        raise ValueError(
            f"`{name}` must be positive definite, got smallest eigenvalue {eig_min:.3g}."
        )


def check_symmetric_positive_semidefinite(name: str, x: Any) -> None:
    """Raise unless the concrete matrix ``x`` is symmetric positive semi-definite."""
    if not is_concrete(x):
        return
    arr = np.asarray(x, dtype=np.float64)
    scale = max(float(np.max(np.abs(arr))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > 1e-10 * scale:
        raise ValueError(f"`{name}` must be symmetric, got max |{name} - {name}^T| = {asym:.3g}.")
    eig_min = float(np.min(np.linalg.eigvalsh(0.5 * (arr + arr.T))))
    if eig_min < -1e-12 * scale:
        raise ValueError(
            f"`{name}` must be positive semi-definite, got smallest eigenvalue {eig_min:.3g}."
        )


def spectral_radius(x: Any) -> float:
    """Largest eigenvalue modulus of a concrete square matrix."""
    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(x, dtype=np.float64)))))


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
