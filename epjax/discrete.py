"""Shared machinery of the discrete (token) model families: one step function, scoring and sampling.

A family describes its deterministic summary of the past through three pure functions

    initial(params)                      -> (carry, logits of x_1)
    step(params, carry, token, position) -> (carry, logits of the next token)
    logits(params, x)                    -> [T, V] logits of x_t given x_<t   (default: a scan of ``step``)

and inherits from :class:`DiscreteModel` the model contract (``log_probs``, ``sample``,
``sample_with_log_probs``, ``vocab_size``), the per-step next-token distributions
(``next_token_log_probs``, the state extension used by the retrospective decomposition), a temperature
that divides the logits when sampling *and* scoring (the model class is ``p_tau``, docs/mathematics.md §7), and boundary
validation of tokens and parameter trees.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epjax._checks import check_num_steps, describe, is_concrete

Array = jax.Array
PyTree = Any


def check_tokens(x: Any, vocab_size: int, *, name: str = "x") -> Array:
    """Validate a token sequence: integer dtype, shape ``[T]`` with ``T >= 1``, values in ``[0, vocab_size)``.

    Values are checked when concrete (outside ``jit``); under tracing only shape and dtype can be.
    """
    if np.ndim(x) != 1:
        raise ValueError(f"`{name}` must be a 1-D sequence of token ids [T], got {describe(x)}.")
    if np.shape(x)[0] < 1:
        raise ValueError(f"`{name}` must hold at least one token, got shape {np.shape(x)}.")
    dtype = jnp.asarray(x).dtype if not isinstance(x, jax.core.Tracer) else x.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"`{name}` must hold integer token ids for a discrete model, got dtype {dtype}.")
    if is_concrete(x):
        arr = np.asarray(x)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"`{name}` must hold token ids in [0, {vocab_size}) (vocab_size = {vocab_size}), got values in "
                f"[{lo}, {hi}]."
            )
    return jnp.asarray(x)


def check_temperature(temperature: Any) -> float:
    """Return ``temperature`` as a float, or raise unless it is a finite number > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"`temperature` must be a number > 0, got {temperature!r}.") from None
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}.")
    return value


def check_param_tree(params: PyTree, expected: PyTree, *, name: str = "params") -> None:
    """Raise unless ``params`` has the tree structure, shapes and dtype kinds of ``expected`` (abstract ok)."""
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(params)
    want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(expected)
    got_paths = [jax.tree_util.keystr(p) for p, _ in got_leaves]
    want_paths = [jax.tree_util.keystr(p) for p, _ in want_leaves]
    if got_paths != want_paths:
        missing = sorted(set(want_paths) - set(got_paths))
        extra = sorted(set(got_paths) - set(want_paths))
        raise ValueError(
            f"`{name}` does not match the model's parameter tree: missing {missing[:5] or 'nothing'}, "
            f"unexpected {extra[:5] or 'nothing'} ({len(got_paths)} leaves given, {len(want_paths)} expected)."
        )
    for (path, got), (_, want) in zip(got_leaves, want_leaves, strict=True):
        where = f"`{name}{jax.tree_util.keystr(path)}`"
        if np.shape(got) != np.shape(want):
            raise ValueError(f"{where} must have shape {np.shape(want)}, got {np.shape(got)}.")
        got_dtype, want_dtype = jnp.result_type(got), jnp.result_type(want)
        for kind in (jnp.inexact, jnp.integer, jnp.bool_):
            if jnp.issubdtype(want_dtype, kind) and not jnp.issubdtype(got_dtype, kind):
                raise ValueError(f"{where} must have a dtype like {want_dtype}, got {got_dtype}.")


def check_finite_params(params: PyTree, *, name: str = "params", allow_neg_inf: bool = False) -> None:
    """Raise when a concrete floating leaf of ``params`` has NaN or infinite entries (tracers are skipped).

    With ``allow_neg_inf``, ``-inf`` is accepted (log-probability parameters: a zero probability).
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        # Only arrays holding values: tracers and abstract shapes (jax.ShapeDtypeStruct) have none to check.
        if not isinstance(leaf, (jax.Array, np.ndarray)) or not is_concrete(leaf):
            continue
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        values = np.asarray(leaf)
        finite = np.isfinite(values) | ((values == -np.inf) if allow_neg_inf else False)
        if not finite.all():
            allowed, bad = ("finite or -inf", "NaN or +inf") if allow_neg_inf else ("finite", "NaN or infinite")
            raise ValueError(
                f"`{name}{jax.tree_util.keystr(path)}` must have {allowed} entries, got "
                f"{int(finite.size - finite.sum())} {bad} of {finite.size}."
            )


_CACHES = ("_abstract_params", "_verified_leaves")  # per-instance caches: not part of a model's value


class DiscreteModel:
    """Base class of the discrete families (a model-contract object; see the module docstring).

    Subclasses set ``vocab_size`` and ``temperature`` and implement ``init``, ``initial`` and ``step``
    (and ``logits`` when a parallel pass is cheaper than the scan, as for a Transformer). Instances are
    immutable values: two models of the same class, ``config`` (or ``vocab_size`` for a family without one) and
    temperature compare and hash equal, so they share compiled code as static arguments of ``jax.jit``
    (:meth:`with_temperature` clones included), and models pickle before and after use.
    """

    vocab_size: int
    temperature: float = 1.0
    max_length: int | None = None  # longest sequence the model can score (a Transformer's context)
    # True for families whose parameters are log-probabilities (a Markov chain): -inf is a zero probability.
    log_probability_params: bool = False
    # True for decoders whose carry is a key/value cache with a slot per position: sampling then grows the
    # cache window by window (see `decode_windows` and `fit_cache`) instead of attending to all slots.
    windowed_cache: bool = False

    def init_config(self, config: Any, config_class: type, *, temperature: float = 1.0) -> None:
        """Set ``config``, ``vocab_size`` and ``temperature`` in a family's ``__init__`` (validating both)."""
        if not isinstance(config, config_class):
            raise ValueError(
                f"`config` must be an {config_class.__module__}.{config_class.__qualname__}, "
                f"got {type(config).__name__}."
            )
        self.config = config
        self.vocab_size = config.vocab_size
        self.temperature = check_temperature(temperature)

    # --- to implement -------------------------------------------------------------------------------------
    def init(self, key: Array) -> PyTree:
        """Fresh parameters."""
        raise NotImplementedError

    def initial(self, params: PyTree) -> tuple[PyTree, Array]:
        """The carry before the first token and the logits ``[V]`` of the first token (after BOS)."""
        raise NotImplementedError

    def step(self, params: PyTree, carry: PyTree, token: Array, position: Array) -> tuple[PyTree, Array]:
        """Consume ``token`` at ``position`` (0-based) and return the new carry and next-token logits ``[V]``."""
        raise NotImplementedError

    def fit_cache(self, carry: PyTree, num_slots: int) -> PyTree:
        """The carry with its key/value cache cut or zero-padded to ``num_slots`` positions (cached decoders)."""
        raise NotImplementedError

    def decoding_params(self, params: PyTree, num_steps: int) -> PyTree:
        """What :meth:`step` receives while sampling ``num_steps`` tokens (:meth:`initial` gets ``params``).

        Computed once per trajectory, before the decoding scan (under ``vmap`` over trajectories, once for
        the batch): a family may add constants its step would otherwise recompute every token, as long as
        its ``step`` also accepts plain ``params``. Default: ``params`` unchanged.
        """
        return params

    def logits(self, params: PyTree, x: Array) -> Array:
        """``[T, V]`` logits: row ``t`` gives the (untempered) law of ``x_t`` given ``x_<t``.

        Default: one ``lax.scan`` of :meth:`step`; the same code scores a sequence and its reversal.
        """
        carry, first = self.initial(params)

        def body(carry, inputs):
            token, position = inputs
            return self.step(params, carry, token, position)

        positions = jnp.arange(x.shape[0] - 1)
        _, rest = jax.lax.scan(body, carry, (x[:-1], positions))
        return jnp.concatenate([first[None], rest], axis=0)

    # --- a model is a value ----------------------------------------------------------------------------------
    def _value(self) -> tuple:
        """What makes two models the same: the class, the configuration and the temperature."""
        config = getattr(self, "config", None)
        return (type(self), self.vocab_size if config is None else config, float(self.temperature))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiscreteModel):
            return NotImplemented
        return self._value() == other._value()

    def __hash__(self) -> int:
        return hash(self._value())

    def __getstate__(self) -> dict:
        # The caches hold weak references and abstract shapes: rebuilt on first use after unpickling.
        return {k: v for k, v in self.__dict__.items() if k not in _CACHES}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # --- the contract -------------------------------------------------------------------------------------
    def with_temperature(self, temperature: float) -> DiscreteModel:
        """A copy whose logits are divided by ``temperature`` when sampling and when scoring."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.temperature = check_temperature(temperature)
        return clone

    def _checked(self, params: PyTree, x: Any) -> Array:
        x = check_tokens(x, self.vocab_size)
        if self.max_length is not None and x.shape[0] > self.max_length:
            raise ValueError(
                f"`x` has {x.shape[0]} tokens, more than the model's context of {self.max_length} tokens."
            )
        self.check_params(params)
        return x

    def check_params(self, params: PyTree) -> None:
        """Raise unless ``params`` has this model's parameter tree (names, shapes, dtype kinds), finite values.

        Values are checked when concrete, once per parameter object: the last verified leaves are remembered
        by weak reference (JAX arrays are immutable), so repeated eager calls with the same parameters pay
        for the scan over their values only once.
        """
        if "_abstract_params" not in self.__dict__:
            self.__dict__["_abstract_params"] = jax.eval_shape(self.init, jax.random.key(0))
        check_param_tree(params, self.__dict__["_abstract_params"])
        leaves = jax.tree_util.tree_leaves(params)
        verified = self.__dict__.get("_verified_leaves")
        if verified is not None and len(verified) == len(leaves) and all(
            r() is leaf for r, leaf in zip(verified, leaves, strict=True)
        ):
            return
        check_finite_params(params, allow_neg_inf=self.log_probability_params)
        if is_concrete(leaves):
            try:
                self.__dict__["_verified_leaves"] = [weakref.ref(leaf) for leaf in leaves]
            except TypeError:  # leaves that cannot be weakly referenced (e.g. NumPy arrays): check every time
                self.__dict__.pop("_verified_leaves", None)

    def _poisoned(self, x: Array) -> Array:
        """Bool ``[T]``: from the first id outside ``[0, vocab_size)`` on (only possible under tracing)."""
        return jnp.cumsum((x < 0) | (x >= self.vocab_size)) > 0

    def next_token_log_probs(self, params: PyTree, x: Array) -> Array:
        """``[T, V]`` log-probabilities of every next token: row ``t`` is ``log p_tau(. | x_<t)``.

        The state extension of the contract used by the exact retrospective decomposition.
        """
        x = self._checked(params, x)
        table = jax.nn.log_softmax(self.logits(params, x) / self.temperature, axis=-1)
        # Row t conditions on x_<t: NaN after an id outside [0, vocab_size) (only possible under tracing).
        after = jnp.concatenate([jnp.zeros(1, bool), self._poisoned(x)[:-1]])
        return jnp.where(after[:, None], jnp.nan, table)

    def log_probs(self, params: PyTree, x: Array) -> Array:
        """Per-step ``log p_tau(x_t | x_<t)``, shape ``[T]`` (the first step under the initial law).

        Token ids and parameter values are checked when concrete. Inside a caller's ``jit`` they are tracers
        and only shapes and dtypes can be checked: there the step of an id outside ``[0, vocab_size)``, negative
        or too large, and every later step (conditioned on it) is NaN, so a sum over the sequence is NaN rather
        than a number computed from a wrapped-around or clipped id. Validate data before tracing (the engine's
        estimators sample their own, always valid, tokens).
        """
        x = self._checked(params, x)
        z = self.logits(params, x) / self.temperature
        # The picked logit minus the log normaliser: no [T, V] table of log-probabilities is written.
        picked = jnp.take_along_axis(z, jnp.clip(x, 0, self.vocab_size - 1)[:, None].astype(jnp.int32), axis=-1)
        log_p = picked[:, 0] - jax.nn.logsumexp(z, axis=-1)
        return jnp.where(self._poisoned(x), jnp.nan, log_p)

    def sample_with_log_probs(self, key: Array, params: PyTree, num_steps: int) -> tuple[Array, Array]:
        """Ancestral sample of ``num_steps`` tokens (int32 ``[T]``) and their log-probabilities ``[T]``.

        One ``lax.scan`` of :meth:`step`; a decoder with a key/value cache runs it in a few consecutive scans
        (:func:`decode_windows`), each over a cache just long enough for its positions.
        """
        num_steps = check_num_steps(num_steps)
        if self.max_length is not None and num_steps > self.max_length:
            raise ValueError(
                f"`num_steps` = {num_steps} exceeds the model's context of {self.max_length} tokens."
            )
        self.check_params(params)
        carry, logits = self.initial(params)
        params = self.decoding_params(params, num_steps)
        keys = jax.random.split(key, num_steps)

        def body(state, inputs):
            carry, logits = state
            key_t, position = inputs
            log_p = jax.nn.log_softmax(logits / self.temperature)
            token = jax.random.categorical(key_t, log_p).astype(jnp.int32)
            carry, logits = self.step(params, carry, token, position)
            return (carry, logits), (token, log_p[token])

        ends = decode_windows(num_steps) if self.windowed_cache else (num_steps,)
        tokens, log_p, start = [], [], 0
        for end in ends:
            # Step `t` writes model position t + 1, so this segment needs the positions 0 .. end.
            carry = self.fit_cache(carry, end + 1) if self.windowed_cache else carry
            (carry, logits), (x, lp) = jax.lax.scan(
                body, (carry, logits), (keys[start:end], jnp.arange(start, end))
            )
            tokens.append(x)
            log_p.append(lp)
            start = end
        if len(ends) == 1:
            return tokens[0], log_p[0]
        return jnp.concatenate(tokens), jnp.concatenate(log_p)

    def sample(self, key: Array, params: PyTree, num_steps: int) -> Array:
        """Ancestral sample of ``num_steps`` tokens, int32 ``[T]``."""
        return self.sample_with_log_probs(key, params, num_steps)[0]


def decode_windows(num_steps: int, *, min_steps: int = 64, max_windows: int = 4) -> tuple[int, ...]:
    """Ends of the consecutive sampling scans of a decoder with a key/value cache: ``n`` equal windows.

    Step ``t`` of a cached decoder attends to every slot of its cache, so a cache sized for the whole
    sequence makes each step read ``T + 1`` slots where only ``t + 2`` are filled. Sampling in ``n`` scans,
    the ``i``-th over a cache of ``end_i + 1`` slots, reads on average ``(n + 1) / (2 n)`` of that:
    5/8 at ``n = 4`` (of the best possible 1/2), for ``n`` compiled scan bodies instead of one. Windows
    shorter than ``min_steps`` steps are not worth a compilation: short samples run in one scan.

    >>> decode_windows(256)
    (64, 128, 192, 256)
    >>> decode_windows(100)
    (100,)
    """
    n = max(1, min(max_windows, num_steps // min_steps))
    return tuple(num_steps * (i + 1) // n for i in range(n))


def fit_slots(x: Array, axis: int, num_slots: int) -> Array:
    """``x`` cut or zero-padded along ``axis`` to ``num_slots`` entries (a key/value cache's slot axis)."""
    size = x.shape[axis]
    if size >= num_slots:
        return jax.lax.slice_in_dim(x, 0, num_slots, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, num_slots - size)
    return jnp.pad(x, pad)


def frozen_config(cls):
    """Decorator: a frozen, hashable dataclass usable as a static jit argument and saved as JSON."""
    return dataclasses.dataclass(frozen=True)(cls)
