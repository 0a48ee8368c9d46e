"""One batching core for everything that draws trajectories: keys, batches, devices, compiler options.

Trajectory ``i`` of a draw always uses ``jax.random.fold_in(key, i)``, so a result never depends on the batch
size, on the number of devices, or on whether the draw ran inside a user's ``jit`` or through a host driver.

Two tiers share the per-trajectory function ``fn(model, params, key_i, *static) -> pytree``:

* :func:`map_trajectories` is pure and traceable: it stacks ``fn`` over ``num`` keys with ``jax.vmap``, or with
  ``jax.lax.map(..., batch_size=)`` when a batch size bounds the memory. It works inside ``jit``, ``vmap`` and
  ``grad``.
* :func:`run_trajectories` is the host driver: compiled batches of exactly ``batch_size`` trajectories (the
  compiled shape never depends on ``num``, so no recompilation for a new sample count), the batch index array
  sharded over all devices, the model's XLA options (:func:`epjax.compiler_options`), an optional progress
  bar, and NumPy results cut to ``num``.

Devices are ``jax.devices()``: under ``jax.distributed`` (one process per host) that is every device of every
process, so a batch is one SPMD computation over a global 1-D mesh ``"batch"``. Every process runs the same
host loop on the same arguments, feeds its own devices their shards, and gets every batch's full outputs back
(:func:`to_host`), so all processes end with the same result, equal to a single process's for the same key.

The per-trajectory function must be a module-level function (it is a static argument of the compiled batch);
``static`` holds its other hashable arguments (number of steps, reversal, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._xla import jit_model

Array = jax.Array
PyTree = Any


def trajectory_keys(key: Array, indices: Array) -> Array:
    """The keys of trajectories ``indices``: ``fold_in(key, i)`` for each ``i`` (uint32 ``[B]``)."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def map_trajectories(
    fn: Callable[..., PyTree], model: Any, params: PyTree, key: Array, num: int, *, static: tuple = (),
    batch_size: int | None = None,
) -> PyTree:
    """``fn(model, params, fold_in(key, i), *static)`` for ``i = 0 .. num - 1``, stacked on a leading axis.

    Pure and traceable. With ``batch_size`` the trajectories run ``batch_size`` at a time under one
    ``jax.lax.map`` (memory bounded by a batch, also for reverse-mode gradients' residuals per batch); without,
    all at once under ``jax.vmap``.
    """
    keys = trajectory_keys(key, jnp.arange(num, dtype=jnp.uint32))
    one = lambda k: fn(model, params, k, *static)
    if batch_size is None or batch_size >= num:
        return jax.vmap(one)(keys)
    return jax.lax.map(one, keys, batch_size=batch_size)


def _batch(model, params, key, indices, data, *, fn, static, reduce):
    keys = trajectory_keys(key, indices)
    if data is None:
        out = jax.vmap(lambda k: fn(model, params, k, *static))(keys)
    else:
        out = jax.vmap(lambda k, d: fn(model, params, k, d, *static))(keys, data)
    return out if reduce is None else reduce(out, data)


def batch_function(
    fn: Callable, model: Any, static: tuple = (), reduce: Callable | None = None
) -> Callable[..., PyTree]:
    """The compiled batch ``(params, key, indices, data=None) -> stacked fn(model, params, fold_in(key, i), ...)``.

    With per-trajectory ``data`` (a pytree of ``[B, ...]`` arrays) ``fn`` is called as
    ``fn(model, params, key_i, data_i, *static)``. ``reduce(outputs, data)``, when given, runs inside the
    compiled batch on the stacked outputs (e.g. to sum per-trajectory gradients on the device instead of moving
    ``B`` copies of them to the host). Equal models and static arguments share one compilation
    (:func:`epjax._xla.jit_model`).
    """
    run = jit_model(model, _batch, fn=fn, static=static, reduce=reduce)
    return lambda params, key, indices, data=None: run(params, key, indices, data)


def device_batch_size(batch_size: int) -> int:
    """``batch_size`` rounded up to a multiple of the number of devices (one shard per device, all processes)."""
    num_devices = len(jax.devices())
    return -(-batch_size // num_devices) * num_devices


def _mesh() -> jax.sharding.Mesh | None:
    """The 1-D mesh ``"batch"`` over every device of every process (``None`` with a single device)."""
    devices = jax.devices()
    return None if len(devices) == 1 else jax.sharding.Mesh(np.array(devices), ("batch",))


def shard_over_devices(tree: PyTree) -> PyTree:
    """Each array of ``tree`` split along its leading axis over all devices (unchanged on one device).

    Every process passes the same whole arrays (their leading axis a multiple of the device count) and keeps
    the shards of its own devices: the result is one global array, also under ``jax.distributed``.
    """
    mesh = _mesh()
    if mesh is None:
        return tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(put, tree)


def replicate_over_devices(tree: PyTree) -> PyTree:
    """The arrays of ``tree`` (parameters, keys) copied to every device (unchanged on one device).

    A compiled batch cannot mix arrays placed on one device (e.g. the outputs of a user's ``jit``) with arrays
    sharded over several, nor, under ``jax.distributed``, arrays of one process with global ones. Every
    process must pass the same values. Leaves that are not arrays (Python scalars) are left as they are.
    """
    mesh = _mesh()
    if mesh is None:
        return tree
    from jax.experimental import multihost_utils

    spec = jax.sharding.PartitionSpec()
    put = lambda a: multihost_utils.host_local_array_to_global_array(a, mesh, spec)
    return jax.tree_util.tree_map(lambda a: put(a) if isinstance(a, (jax.Array, np.ndarray)) else a, tree)


def to_host(tree: PyTree) -> PyTree:
    """The arrays of ``tree`` as whole NumPy arrays on every process (gathered across processes when needed)."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    # Every process receives the whole array (a sharded array is gathered, a replicated one read locally).
    return jax.tree_util.tree_map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree)


def progress_bar(total: int, desc: str, unit: str = "batch"):
    """A tqdm bar on stderr (tqdm is imported only when a bar is asked for)."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)


def run_trajectories(
    fn: Callable[..., PyTree], model: Any, params: PyTree, key: Array, num: int, *, static: tuple = (),
    batch_size: int = 1024, progress: bool = False, desc: str = "trajectories",
    check: Callable[[int, PyTree], None] | None = None,
) -> PyTree:
    """Host driver: ``fn`` over trajectories ``0 .. num - 1`` in compiled batches, results as NumPy arrays.

    Every compiled call holds exactly :func:`device_batch_size` ``(batch_size)`` trajectories, whatever ``num``
    is (the last batch runs whole and is cut), sharded over all devices (of all processes).

    Args:
        fn: per-trajectory function ``fn(model, params, key_i, *static) -> pytree of arrays``.
        model: the model (static: its value selects the compiled code and its XLA options).
        params: its parameters.
        key: the draw's key; trajectory ``i`` uses ``fold_in(key, i)``.
        num: number of trajectories.
        static: hashable extra arguments of ``fn``.
        batch_size: trajectories per compiled call.
        progress: show a progress bar over batches.
        desc: the bar's label.
        check: called as ``check(start, batch)`` on each batch's NumPy outputs (cut to the draw's trajectories),
            to refuse bad values early with the trajectories' indices.

    Returns:
        The pytree of ``fn``'s outputs, each stacked to ``[num, ...]``.
    """
    out = []

    def keep(start: int, stop: int, batch: PyTree) -> None:
        # Only trajectories start .. stop - 1 belong to the draw: the rest of a last batch is never checked (a bad
        # value there must not refuse a sample that does not hold it) nor kept.
        batch = jax.tree_util.tree_map(lambda a: a[: stop - start], batch)
        if check is not None:
            check(start, batch)
        out.append(batch)

    for_each_batch(fn, model, params, key, num, keep, static=static, batch_size=batch_size, progress=progress,
                   desc=desc)
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *out)


def _padded(start: int, size: int, a: np.ndarray) -> np.ndarray:
    """Rows ``start .. start + size - 1`` of ``a``, zero-padded past its end."""
    rows = a[start : start + size]
    return np.concatenate([rows, np.zeros((size - rows.shape[0],) + a.shape[1:], a.dtype)])


def for_each_batch(
    fn: Callable[..., PyTree], model: Any, params: PyTree, key: Array, num: int,
    visit: Callable[[int, int, PyTree], None], *, static: tuple = (), data: PyTree = None,
    reduce: Callable | None = None, batch_size: int = 1024, progress: bool = False, desc: str = "trajectories",
) -> None:
    """The host loop under every driver: ``visit(start, stop, outputs)`` for each compiled batch, in order.

    Batches hold exactly :func:`device_batch_size` ``(batch_size)`` trajectories ``start .. start + size - 1``
    (the last one runs whole: ``stop = min(start + size, num)`` says how many count), their indices sharded over
    the devices. ``data`` (a pytree of ``[num, ...]`` NumPy arrays) is cut per batch and zero-padded at the end;
    ``outputs`` are NumPy arrays (after ``reduce``, see :func:`batch_function`). Under ``jax.distributed`` every
    process calls this with the same arguments and visits the same whole outputs.
    """
    size = device_batch_size(batch_size)
    run = batch_function(fn, model, static, reduce)
    params, key = replicate_over_devices((params, key))
    starts = range(0, num, size)
    bar = progress_bar(len(starts), desc) if progress else None
    try:
        for start in starts:
            stop = min(start + size, num)
            indices = shard_over_devices(np.arange(start, start + size, dtype=np.uint32))
            batch_data = None if data is None else jax.tree_util.tree_map(partial(_padded, start, size), data)
            visit(start, stop, to_host(run(params, key, indices, shard_over_devices(batch_data))))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _sample(model: Any, params: PyTree, key: Array, num_steps: int) -> Array:
    return model.sample(key, params, num_steps)


def sample_trajectories(
    key: Array, model: Any, params: PyTree, *, num_steps: int, num: int, batch_size: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """``num`` trajectories of ``num_steps`` steps drawn from the model, ``[num, T, ...]`` NumPy (training data).

    Trajectory ``i`` is ``model.sample(fold_in(key, i), params, num_steps)``, as in every estimator.
    """
    return run_trajectories(
        _sample, model, params, key, num, static=(num_steps,), batch_size=batch_size, progress=progress,
        desc=f"sampling T={num_steps}",
    )
