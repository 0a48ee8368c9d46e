"""One training loop for every discrete family (optax AdamW, warm-up + cosine decay), and saving/loading.

Used by the neural-family experiments and by the arrow-of-time learnability gap, which trains forward and
backward twins of one architecture with it (docs/mathematics.md §8).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from epjax import families
from epjax._checks import check_positive_int, describe
from epjax._xla import compiler_options, jit_for
from epjax.discrete import DiscreteModel, check_param_tree

Array = jax.Array
PyTree = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings.

    Attributes:
        steps: number of optimiser steps.
        batch_size: sequences per step (drawn uniformly with replacement from the training data).
        learning_rate: peak learning rate after warm-up.
        warmup_steps: linear warm-up length; cosine decay to ``final_lr_fraction * learning_rate`` after it.
        final_lr_fraction: learning rate at the end, as a fraction of the peak.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: global-norm gradient clipping threshold (``None``: no clipping).
        eval_every: evaluate the held-out loss every this many steps (and at the end).
    """

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    eval_every: int = 100

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("warmup_steps", self.warmup_steps, minimum=0)
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate!r}.")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"`final_lr_fraction` must be in [0, 1], got {self.final_lr_fraction!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {self.weight_decay!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"`grad_clip` must be > 0 or None, got {self.grad_clip!r}.")


class History(NamedTuple):
    """Losses recorded during training, in nats per token.

    Attributes:
        steps: ``[n]`` step numbers of the train losses (every step).
        train_loss: ``[n]`` mini-batch loss at each step.
        eval_steps: ``[m]`` step numbers of held-out evaluations.
        eval_loss: ``[m]`` held-out loss (mean over all held-out sequences).
    """

    steps: np.ndarray
    train_loss: np.ndarray
    eval_steps: np.ndarray
    eval_loss: np.ndarray


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay, after optional global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.steps, config.warmup_steps + 1),
        end_value=config.final_lr_fraction * config.learning_rate,
    )
    adamw = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.grad_clip is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)


def cross_entropy(model: DiscreteModel, params: PyTree, batch: Array) -> Array:
    """Mean negative log-likelihood per token of a batch ``[B, T]`` of sequences, in nats."""
    return -jnp.mean(jax.vmap(model.log_probs, in_axes=(None, 0))(params, batch))


def check_sequences(name: str, data: Any, vocab_size: int) -> Array:
    """Validate training data: integer ``[N, T]`` with ``N >= 1``, ``T >= 1`` and ids in ``[0, vocab_size)``."""
    if np.ndim(data) != 2 or min(np.shape(data)) < 1:
        raise ValueError(f"`{name}` must be an integer array of sequences [N, T], got {describe(data)}.")
    arr = np.asarray(data)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer token ids, got dtype {arr.dtype}.")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"`{name}` must hold token ids in [0, {vocab_size}), got values in [{lo}, {hi}].")
    return jnp.asarray(arr, dtype=jnp.int32)


def _step_function(model: DiscreteModel, opt: optax.GradientTransformation, batch_size: int, num_sequences: int):
    """One optimiser step: ``(params, opt_state, key, data) -> (params, opt_state, loss)``.

    ``key`` picks ``batch_size`` rows of ``data`` uniformly with replacement; the loss is the mean per-token
    cross-entropy of the batch before the update.
    """

    def step(params, opt_state, key, data):
        idx = jax.random.randint(key, (batch_size,), 0, num_sequences)
        loss, grads = jax.value_and_grad(cross_entropy, argnums=1)(model, params, data[idx])
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def train(
    key: Array,
    model: DiscreteModel,
    params: PyTree,
    data: Any,
    *,
    config: TrainConfig = TrainConfig(),
    eval_data: Any = None,
    callback: Callable[[int, PyTree], None] | None = None,
    callback_every: int | None = None,
    progress: bool = False,
) -> tuple[PyTree, History]:
    """Train ``model`` by maximum likelihood on ``data`` (``[N, T]`` token ids) with AdamW.

    Each step draws ``config.batch_size`` sequences uniformly with replacement and takes one jitted optimiser
    step on the mean per-token cross-entropy.

    Args:
        key: a ``jax.random`` key (batch selection).
        model: a discrete family model (``DiscreteModel``).
        params: initial parameters, e.g. ``model.init(key)``.
        data: training sequences ``[N, T]``.
        config: optimiser and loop settings.
        eval_data: held-out sequences ``[M, T']``; their loss is recorded every ``config.eval_every`` steps.
        callback: ``callback(step, params)`` called every ``callback_every`` steps (and after the last),
            e.g. to measure the entropy production during training.
        callback_every: period of ``callback`` (default ``config.eval_every``).
        progress: show a progress bar with the current losses.

    Returns:
        ``(params, history)``: the trained parameters and the recorded :class:`History`.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"`config` must be an epjax.train.TrainConfig, got {type(config).__name__}.")
    model.check_params(params)
    data = check_sequences("data", data, model.vocab_size)
    if eval_data is not None:
        eval_data = check_sequences("eval_data", eval_data, model.vocab_size)
    callback_every = (
        config.eval_every if callback_every is None else check_positive_int("callback_every", callback_every)
    )
    opt = optimizer(config)
    opt_state = opt.init(params)
    num_sequences = data.shape[0]

    jit = functools.partial(jax.jit, compiler_options=compiler_options(model) or None)
    one_step = _step_function(model, opt, config.batch_size, num_sequences)

    @jit
    def step(params, opt_state, key):
        return one_step(params, opt_state, key, data)

    evaluate = jit(lambda p, batch: cross_entropy(model, p, batch))

    def held_out(p):
        # Evaluate in chunks so memory does not grow with the held-out set.
        chunk = 256
        total = 0.0
        for start in range(0, eval_data.shape[0], chunk):
            batch = eval_data[start : start + chunk]
            total += float(evaluate(p, batch)) * batch.shape[0]
        return total / eval_data.shape[0]

    steps_iter = range(1, config.steps + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(steps_iter, desc=f"train {getattr(model, 'family', type(model).__name__)}", unit="step")
        steps_iter = bar
    train_losses, eval_steps, eval_losses = [], [], []
    for i in steps_iter:
        key, sub = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, sub)
        train_losses.append(loss)
        last = i == config.steps
        if eval_data is not None and (i % config.eval_every == 0 or last):
            eval_steps.append(i)
            eval_losses.append(held_out(params))
            if bar is not None:
                bar.set_postfix(train=f"{float(loss):.4f}", held_out=f"{eval_losses[-1]:.4f}")
        if callback is not None and (i % callback_every == 0 or last):
            callback(i, params)
    history = History(
        steps=np.arange(1, config.steps + 1),
        train_loss=np.asarray(jnp.stack(train_losses), dtype=np.float64),
        eval_steps=np.asarray(eval_steps, dtype=np.int64),
        eval_loss=np.asarray(eval_losses, dtype=np.float64),
    )
    if not np.all(np.isfinite(history.train_loss)):
        raise FloatingPointError(
            "training diverged: non-finite loss at step "
            f"{int(np.argmax(~np.isfinite(history.train_loss))) + 1}; lower `learning_rate` or enable clipping."
        )
    return params, history


def _check_stack(name: str, data: Any, num_models: int, vocab_size: int) -> Array:
    """Validate ``[M, N, T]`` token ids, one set of sequences per model."""
    if np.ndim(data) != 3 or np.shape(data)[0] != num_models:
        raise ValueError(
            f"`{name}` must be integer sequences [M, N, T] with M = {num_models} (one set per model), "
            f"got {describe(data)}."
        )
    flat = check_sequences(name, np.reshape(np.asarray(data), (-1, np.shape(data)[-1])), vocab_size)
    return flat.reshape(np.shape(data))


@functools.lru_cache(maxsize=16)
def _many_functions(model: DiscreteModel, config: TrainConfig, num_sequences: int, strategy: str):
    """``(step, evaluate, optimizer)`` of :func:`train_many`, jitted once per model, settings and data size."""
    opt = optimizer(config)
    one_step = _step_function(model, opt, config.batch_size, num_sequences)
    jit = functools.partial(jax.jit, compiler_options=compiler_options(model) or None)

    def over_models(fun):
        if strategy == "vmap":
            return jax.vmap(fun)
        return lambda *args: jax.lax.map(lambda a: fun(*a), args)

    @jit
    def step(params, opt_state, keys, data):
        keys, subs = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        params, opt_state, loss = over_models(one_step)(params, opt_state, subs, data)
        return params, opt_state, keys, loss

    evaluate = jit(over_models(lambda p, batch: cross_entropy(model, p, batch)))
    return step, evaluate, opt


def train_many(
    keys: Array,
    model: DiscreteModel,
    params: PyTree,
    data: Any,
    *,
    config: TrainConfig = TrainConfig(),
    eval_data: Any = None,
    progress: bool = False,
    desc: str | None = None,
    labels: Sequence[str] | None = None,
    strategy: str = "auto",
) -> tuple[PyTree, History]:
    """Train ``M`` models of one architecture at once: :func:`train` over a leading model axis, in one loop.

    Model ``m`` starts from ``params[m]``, trains on ``data[m]`` and draws its batches with ``keys[m]`` exactly as
    :func:`train` would with that key, so it ends where ``train(keys[m], model, params[m], data[m], ...)`` ends
    (to the rounding of the batched arithmetic). Models given the same key and the same number of sequences
    draw the same rows at every step: the forward and backward twins of :mod:`epjax.aot` see the same sequences,
    each in its own order. One compiled step serves all ``M`` models (compiled once per model, settings and data
    size, and reused by later calls), so the loop pays one dispatch per step instead of ``M``.

    Args:
        keys: ``[M]`` ``jax.random`` keys, one per model.
        model: the architecture (a discrete family model).
        params: parameters stacked along a leading axis of length ``M`` (e.g. ``jax.vmap(model.init)(keys)``).
        data: training sequences ``[M, N, T]``.
        config: optimiser and loop settings (shared).
        eval_data: held-out sequences ``[M, N', T']``, evaluated every ``config.eval_every`` steps.
        progress: show a progress bar.
        desc: the progress bar's label.
        labels: a short name per model; the progress bar then shows each model's latest held-out loss by name
            (default: the first four, unnamed).
        strategy: how the step runs over the models: ``"vmap"`` (one batched computation: best on GPU and TPU),
            ``"map"`` (``lax.map``, one model after the other inside the compiled step: best on CPU, where
            batching the models' matrix products over a model axis is slower than looping, by up to 2x for an
            LSTM), or ``"auto"`` (``"map"`` on CPU, else ``"vmap"``).

    Returns:
        ``(params, history)``: stacked parameters and a :class:`History` whose loss arrays have a leading model
        axis (``train_loss`` ``[M, steps]``, ``eval_loss`` ``[M, evaluations]``).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"`config` must be an epjax.train.TrainConfig, got {type(config).__name__}.")
    keys = jnp.asarray(keys)
    if not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) or keys.ndim != 1:
        raise ValueError(
            f"`keys` must be a 1-D array of jax.random keys (jax.random.split(key, M)), got {describe(keys)}."
        )
    num_models = keys.shape[0]
    leading = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(params)}
    if leading != {num_models}:
        raise ValueError(f"`params` must be stacked along a leading axis of length {num_models} (one per key).")
    model.check_params(jax.tree_util.tree_map(lambda leaf: leaf[0], params))
    if labels is not None and len(labels) != num_models:
        raise ValueError(f"`labels` must name each of the {num_models} models, got {len(labels)} labels.")
    data = _check_stack("data", data, num_models, model.vocab_size)
    if eval_data is not None:
        eval_data = _check_stack("eval_data", eval_data, num_models, model.vocab_size)
    if strategy not in ("auto", "vmap", "map"):
        raise ValueError(f"`strategy` must be 'auto', 'vmap' or 'map', got {strategy!r}.")
    if strategy == "auto":
        strategy = "map" if jax.default_backend() == "cpu" else "vmap"
    step, evaluate, opt = _many_functions(model, config, data.shape[1], strategy)
    opt_state = jax.vmap(opt.init)(params)

    def held_out(p):
        chunk, total = 256, 0.0
        for start in range(0, eval_data.shape[1], chunk):
            batch = eval_data[:, start : start + chunk]
            total = total + np.asarray(evaluate(p, batch), dtype=np.float64) * batch.shape[1]
        return total / eval_data.shape[1]

    steps_iter = range(1, config.steps + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        label = desc or f"train {num_models} x {getattr(model, 'family', type(model).__name__)}"
        bar = tqdm(steps_iter, desc=label, unit="step")
        steps_iter = bar
    train_losses, eval_steps, eval_losses = [], [], []
    for i in steps_iter:
        params, opt_state, keys, loss = step(params, opt_state, keys, data)
        train_losses.append(loss)
        if eval_data is not None and (i % config.eval_every == 0 or i == config.steps):
            eval_steps.append(i)
            eval_losses.append(held_out(params))
            if bar is not None:
                if labels is None:
                    bar.set_postfix(held_out=" ".join(f"{v:.3f}" for v in eval_losses[-1][:4]))
                else:
                    bar.set_postfix_str(" ".join(f"{n} {v:.3f}" for n, v in zip(labels, eval_losses[-1], strict=True)))
    train_loss = np.asarray(jnp.stack(train_losses, axis=1), dtype=np.float64)
    if not np.all(np.isfinite(train_loss)):
        bad = np.argwhere(~np.isfinite(train_loss))[0]
        raise FloatingPointError(
            f"training diverged: model {int(bad[0])} has a non-finite loss at step {int(bad[1]) + 1}; lower "
            "`learning_rate` or enable clipping."
        )
    history = History(
        steps=np.arange(1, config.steps + 1),
        train_loss=train_loss,
        eval_steps=np.asarray(eval_steps, dtype=np.int64),
        eval_loss=np.stack(eval_losses, axis=0).T if eval_losses else np.zeros((num_models, 0)),
    )
    return params, history


def _sequence_losses(model: DiscreteModel, params: PyTree, batch: Array) -> Array:
    return jax.vmap(lambda x: -jnp.mean(model.log_probs(params, x)))(batch)


def sequence_losses(model: DiscreteModel, params: PyTree, data: Any, *, chunk: int = 512) -> np.ndarray:
    """Per-sequence cross-entropy (mean negative log-probability per token) of ``data [N, L]``, float64 ``[N]``.

    Scored in jitted chunks of one shape (the last one padded), so one compilation serves any ``N``.
    """
    data = np.asarray(check_sequences("data", data, model.vocab_size))
    model.check_params(params)
    num = data.shape[0]
    chunk = min(check_positive_int("chunk", chunk), num)
    losses = jit_for(model, _sequence_losses, static_argnames=("model",))
    out = []
    for start in range(0, num, chunk):
        batch = data[start : start + chunk]
        if batch.shape[0] < chunk:
            batch = np.concatenate([batch, np.repeat(batch[:1], chunk - batch.shape[0], axis=0)])
        out.append(np.asarray(losses(model, params, batch), dtype=np.float64))
    return np.concatenate(out)[:num]


# --- saving and loading ---------------------------------------------------------------------------------

_META_KEY = "__epjax_meta__"


def model_spec(model: DiscreteModel) -> dict:
    """``{"family", "config", "temperature"}``: enough to rebuild ``model`` (:func:`epjax.families.model_spec`)."""
    return families.model_spec(model)


def build_model(spec: dict) -> DiscreteModel:
    """Rebuild a model from :func:`model_spec`'s dictionary through the family registry (:mod:`epjax.families`)."""
    return families.build_model(spec)


def save(path: str | os.PathLike, model: DiscreteModel, params: PyTree, *, extra: dict | None = None) -> None:
    """Save a model's spec and parameters to one ``.npz`` file (arrays by tree path, metadata as JSON).

    Args:
        path: destination file.
        model: the model (its family, config and temperature are stored).
        params: its parameters.
        extra: JSON-serialisable metadata to store alongside (e.g. training settings).
    """
    model.check_params(params)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}
    meta = {"model": model_spec(model), "extra": extra or {}, "format": 1}
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{_META_KEY: np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)})


def load(path: str | os.PathLike) -> tuple[DiscreteModel, PyTree, dict]:
    """Load ``(model, params, extra)`` saved by :func:`save`.

    Raises:
        ValueError: when the file is missing, not an epjax model file, or its arrays do not match the
            stored model's parameter tree.
    """
    if not os.path.isfile(path):
        raise ValueError(f"model file {os.fspath(path)!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise ValueError(f"model file {os.fspath(path)!r} is not a readable epjax model file: {err}") from None
    if _META_KEY not in arrays:
        raise ValueError(f"model file {os.fspath(path)!r} has no epjax metadata (not saved by epjax.train.save).")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    model = build_model(meta["model"])
    # The parameter tree's structure, shapes and dtypes, without initialising (no compute, no memory).
    template = jax.eval_shape(model.init, jax.random.key(0))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for p, leaf in leaves:
        name = jax.tree_util.keystr(p)
        if name not in arrays:
            raise ValueError(f"model file {os.fspath(path)!r} lacks parameter {name}.")
        values.append(jnp.asarray(arrays[name], dtype=leaf.dtype))
    params = jax.tree_util.tree_unflatten(treedef, values)
    check_param_tree(params, template)
    return model, params, meta.get("extra", {})


__all__ = [
    "History",
    "TrainConfig",
    "build_model",
    "cross_entropy",
    "load",
    "model_spec",
    "optimizer",
    "save",
    "sequence_losses",
    "train",
    "train_many",
]
