"""State-space language models: a linear time-invariant diagonal SSM (S4D) and a selective SSM (Mamba).

Both are residual stacks over token embeddings whose deterministic summary of the past (docs/mathematics.md §1) is the
stack of per-layer recurrent states, so every conditional ``p(x_{t+1} | x_<=t)`` is explicit and cheap:

    e_0 = bos,  e_t = embed(x_t)                 (a learned BOS vector is the input at position 0, so the
    u^0 = e;    u^{l+1} = u^l + Block_l(u^l)      law of x_1 is learned; docs/mathematics.md §1 "after the BOS token")
    logits_t = W_out RMSNorm(u^L_t) + b_out      row t: the law of x_{t+1} given x_<=t

Each layer's core is a diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (elementwise):

``kind="s4d"`` (Gu et al. 2022, "On the parameterization and initialization of diagonal state space
models"), per channel ``d < d_model`` and mode ``n < d_state``, complex:

    A = -exp(log_A_real) + i A_imag,  Delta = exp(log_dt)       (S4D-Lin init: A_n = -1/2 + i pi n)
    Abar = exp(Delta A),  Bbar = (Abar - 1) / A                   (zero-order hold, B = 1 absorbed in C)
    v_t = RMSNorm(u_t)
    h_t = Abar h_{t-1} + Bbar v_t,   y_t = Re(sum_n C_n h_{t,n}) + D v_t
    Block(u)_t = GLU(W gelu(y_t) + b)                              (GLU([a, g]) = a * sigmoid(g))

``kind="mamba"`` (Gu & Dao 2023, the selective scan of ``mamba_simple.py``), inner width
``E = expand * d_model``:

    (v_t, z_t) = W_in RMSNorm(u_t)                           [E] each
    c_t = silu(sum_k w_k * v_{t-K+1+k} + w_b)                 causal depthwise conv (v_{<0} = 0), K = d_conv
    Delta_t = softplus(W_dt (W_r c_t) + b_dt),  B_t = W_B c_t,  C_t = W_C c_t     (input-dependent)
    h_t = exp(Delta_t A) * h_{t-1} + Delta_t B_t c_t,  A = -exp(A_log)  [E, N] real
    y_t = C_t . h_t + D c_t;   Block(u)_t = W_out (y_t * silu(z_t))

The Mamba summary holds, per layer, the last ``K - 1`` conv inputs and ``h``. Both models are time
homogeneous (no positional input), as the EP of docs/mathematics.md §2 requires of the scoring model.

Scoring (:meth:`Model.logits`) runs every layer over the whole sequence at once: the inputs, hence
``a_t, b_t``, are known for all t in parallel, so the linear recurrence is solved with
``jax.lax.associative_scan`` on the pairs ``(a_t, b_t)`` under ``(a, b) o (a', b') = (a a', a' b + b')``,
in time chunks of ``Config.scan_chunk`` steps (:func:`linear_recurrence`; for Mamba by default one chunk
on accelerators, and a sequential scan on CPU, where it is several times faster). S4D is time invariant,
so by default it scores in its convolution form instead, ``y_t = sum_{s<=t} k_{t-s} v_s`` with the impulse
response ``k_l = Re(sum_n C_n Abar_n^l Bbar_n)``, by FFT in ``O(T log T)``. Sampling uses the recurrent
:meth:`Model.step` in ``lax.scan``. All paths agree to round-off.

Example:
    >>> import jax
    >>> from epjax import ssm
    >>> model = ssm.Model(ssm.Config(vocab_size=5, kind="mamba", d_model=8, d_state=4, num_layers=1))
    >>> params = model.init(jax.random.key(0))
    >>> model.log_probs(params, jax.numpy.array([1, 2, 3])).shape
    (3,)
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from epjax._checks import check_dtype_available, check_positive_float, check_positive_int
from epjax._xla import XLA_CPU_EMITTERS
from epjax.discrete import DiscreteModel, frozen_config

Array = jax.Array
PyTree = Any

KINDS = ("s4d", "mamba")
DTYPES = ("float32", "float64")


@frozen_config
class Config:
    """Architecture of a state-space language model.

    Attributes:
        vocab_size: alphabet size ``V``.
        kind: ``"s4d"`` (linear time-invariant, complex diagonal) or ``"mamba"`` (selective, real diagonal).
        d_model: residual width.
        num_layers: number of residual SSM blocks.
        d_state: state size ``N`` per channel (complex modes for S4D, real for Mamba).
        expand: Mamba inner width ``E = expand * d_model`` (unused by S4D).
        d_conv: Mamba causal depthwise convolution kernel size ``K`` (unused by S4D).
        dt_rank: Mamba rank of the step-size projection; ``None`` means ``ceil(d_model / 16)``.
        dt_min: smallest initial step size ``Delta`` (log-uniform initialisation in ``[dt_min, dt_max]``).
        dt_max: largest initial step size.
        scan_chunk: how scoring solves the recurrence. An integer is the longest stretch of time solved by
            one associative scan (see :func:`linear_recurrence`): ``1`` is a sequential scan, ``>= T`` one
            associative scan over the whole sequence; the names ``"sequential"`` (``= 1``) and
            ``"associative"`` (one scan over the whole sequence, whatever ``T``) say the same by method, as
            ``kalman.log_probs(..., method=)`` does. ``None`` (default): S4D, being time invariant, uses its
            convolution form (impulse response and FFT, on every backend); Mamba picks by backend, sequential
            on CPU and one associative scan on GPU/TPU. Changes speed and memory only, never the numbers
            beyond round-off.
        dtype: parameter and computation dtype, ``"float32"`` or ``"float64"`` (the latter needs
            ``jax.enable_x64``).
    """

    vocab_size: int
    kind: str = "s4d"
    d_model: int = 64
    num_layers: int = 2
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    dt_rank: int | None = None
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    scan_chunk: int | str | None = None
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "d_state", "expand", "d_conv"):
            check_positive_int(name, getattr(self, name))
        if self.dt_rank is not None:
            check_positive_int("dt_rank", self.dt_rank)
        if self.scan_chunk is not None:
            _check_chunk(self.scan_chunk, "scan_chunk")
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}.")
        for name in ("dt_min", "dt_max"):
            check_positive_float(name, getattr(self, name))
        if self.dt_min > self.dt_max:
            raise ValueError(
                f"`dt_min` must be <= `dt_max`, got dt_min={self.dt_min!r} > dt_max={self.dt_max!r}."
            )

    @property
    def d_inner(self) -> int:
        """Width of the recurrence: ``d_model`` for S4D, ``expand * d_model`` for Mamba."""
        return self.d_model if self.kind == "s4d" else self.expand * self.d_model

    @property
    def rank(self) -> int:
        """The Mamba step-size projection rank (``dt_rank`` resolved)."""
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.d_model / 16)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary (``Config(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)


# --- the linear recurrence ------------------------------------------------------------------------------


def _combine(left, right):
    # Composition of the affine maps h -> a h + b, left first: (a', b') o (a, b) = (a a', a' b + b').
    a_l, b_l = left
    a_r, b_r = right
    return a_l * a_r, a_r * b_l + b_r


SCAN_METHODS = {"sequential": 1, "associative": 2**31 - 1}
"""The named scan methods and the chunk length each stands for (:func:`linear_recurrence`)."""


def _check_chunk(chunk, name: str = "chunk") -> int:
    """A chunk length: a positive integer, or a name of :data:`SCAN_METHODS` resolved to its length."""
    if isinstance(chunk, str):
        if chunk not in SCAN_METHODS:
            raise ValueError(
                f"`{name}` must be a positive integer or one of {tuple(SCAN_METHODS)}, got {chunk!r}."
            )
        return SCAN_METHODS[chunk]
    return check_positive_int(name, chunk)


def linear_recurrence(coefficients, readout, h0: Array, inputs: PyTree, chunk: int | str) -> tuple[Array, Array]:
    """Solve ``h_t = a_t * h_{t-1} + b_t`` (elementwise) for ``t < T``; read every state out.

    ``(a_t, b_t) = coefficients(inputs_t)`` and ``y_t = readout(h_t, inputs_t)`` are computed a chunk of
    ``L = min(chunk, T)`` steps at a time: inside a chunk one ``jax.lax.associative_scan`` (depth
    ``log2 L``), across chunks a sequential ``lax.scan`` carrying ``h``; a remainder of ``T mod L`` steps
    gets one more associative scan. Only ``[L, ...]`` coefficients and states live at once.
    ``chunk >= T`` is one associative scan over the whole sequence (best on accelerators);
    ``chunk = 1`` is a plain sequential scan (best on CPUs, where the associative scan's extra
    ``O(log L)`` passes over memory cost more than its parallelism gains).
    ``chunk="sequential"`` and ``chunk="associative"`` name these two ends. The initial state ``h0`` enters
    every path the same way, folded into the first chunk's first offset, ``b_0 <- b_0 + a_0 h0``, so the
    composed maps start from ``h0`` and not from zero.

    Args:
        coefficients: ``inputs [L, ...] -> (a [L, ...], b [L, ...])``.
        readout: ``(h [L, ...], inputs [L, ...]) -> y [L, ...]``.
        h0: ``[...]`` state before ``t = 0``.
        inputs: a pytree of ``[T, ...]`` arrays.
        chunk: longest chunk ``L >= 1``, or ``"sequential"`` (``1``) or ``"associative"`` (``T``).

    Returns:
        ``y [T, ...]`` and the last state ``h_{T-1}``.

    >>> coefficients = lambda u: (jnp.full_like(u, 0.5), u)  # h_t = h_{t-1} / 2 + u_t
    >>> y, h = linear_recurrence(coefficients, lambda h, u: h, jnp.zeros(1), jnp.ones((5, 1)), chunk=2)
    >>> y[:, 0].tolist()
    [1.0, 1.5, 1.75, 1.875, 1.9375]
    """
    leaves = jax.tree_util.tree_leaves(inputs)
    T = leaves[0].shape[0]
    L = min(_check_chunk(chunk), T)
    num_chunks, rest = divmod(T, L)

    def block(h, inputs_c):
        a, b = map(jnp.asarray, coefficients(inputs_c))
        b = b.at[0].add(a[0] * h)  # fold the carried state into the chunk's first input
        if b.shape[0] == 1:
            hs = b
        else:
            hs = jax.lax.associative_scan(_combine, (a, b))[1]
        return hs[-1], readout(hs, inputs_c)

    def split(x, lo, hi):
        return jax.tree_util.tree_map(lambda v: v[lo:hi], x)

    outputs = []
    h = h0
    if num_chunks == 1:
        h, y = block(h, split(inputs, 0, L))
        outputs.append(y)
    else:
        main = jax.tree_util.tree_map(
            lambda v: v[: num_chunks * L].reshape((num_chunks, L) + v.shape[1:]), inputs
        )
        h, y = jax.lax.scan(block, h, main)
        outputs.append(y.reshape((num_chunks * L,) + y.shape[2:]))
    if rest:
        h, y = block(h, split(inputs, num_chunks * L, T))
        outputs.append(y)
    return (outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs)), h


def _scan_chunk(config_chunk: int | str | None) -> int:
    """The chunk length to use: the configured one, or by backend (sequential on CPU, one scan elsewhere)."""
    if config_chunk is not None:
        return _check_chunk(config_chunk, "scan_chunk")
    return 1 if jax.default_backend() == "cpu" else 2**31 - 1


# --- layers ---------------------------------------------------------------------------------------------


def _uniform(low: float, high: float):
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def _log_uniform_dt(key, shape, dtype, dt_min: float, dt_max: float) -> Array:
    # Delta ~ log-uniform in [dt_min, dt_max] (S4D and Mamba initialisation).
    return jnp.exp(jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max)))


class S4DLayer(nnx.Module):
    """Pre-norm residual S4D block over ``H = d_model`` channels with ``N = d_state`` complex modes each.

    Parameters: ``log_dt [H]``, ``log_A_real [H, N]``, ``A_imag [H, N]``, ``C_re, C_im [H, N]``, ``D [H]``,
    the norm scale and the GLU output projection ``[H, 2H]``.
    """

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        H, N = config.d_model, config.d_state
        self.norm = nnx.RMSNorm(H, epsilon=1e-5, dtype=dtype, param_dtype=dtype, rngs=rngs)
        dt = _log_uniform_dt(rngs.params(), (H,), dtype, config.dt_min, config.dt_max)
        self.log_dt = nnx.Param(jnp.log(dt))
        self.log_A_real = nnx.Param(jnp.full((H, N), math.log(0.5), dtype))
        self.A_imag = nnx.Param(jnp.broadcast_to(math.pi * jnp.arange(N, dtype=dtype), (H, N)))
        # C ~ CN(0, 1): unit complex variance, half in each part.
        self.C_re = nnx.Param(jax.random.normal(rngs.params(), (H, N), dtype) * math.sqrt(0.5))
        self.C_im = nnx.Param(jax.random.normal(rngs.params(), (H, N), dtype) * math.sqrt(0.5))
        self.D = nnx.Param(jax.random.normal(rngs.params(), (H,), dtype))
        self.out = nnx.Linear(H, 2 * H, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def _step_exponent(self) -> tuple[Array, Array]:
        """``(Delta A, A)``, complex ``[H, N]``: ``Abar = exp(Delta A)``."""
        A = -jnp.exp(self.log_A_real[...]) + 1j * self.A_imag[...]
        return jnp.exp(self.log_dt[...])[:, None] * A, A

    def discretise(self) -> tuple[Array, Array, Array]:
        """``(Abar, Bbar, C)``, each complex ``[H, N]`` (zero-order hold with ``B = 1``)."""
        dtA, A = self._step_exponent()
        Abar = jnp.exp(dtA)
        return Abar, (Abar - 1) / A, self.C_re[...] + 1j * self.C_im[...]

    def _mix(self, u: Array, y: Array) -> Array:
        a, g = jnp.split(self.out(jax.nn.gelu(y)), 2, axis=-1)
        return u + a * jax.nn.sigmoid(g)

    def init_state(self) -> Array:
        """Zero complex state ``[H, N]``."""
        dtype = jnp.result_type(self.log_dt[...].dtype, jnp.complex64)
        return jnp.zeros(self.log_A_real[...].shape, dtype)

    def step(self, h: Array, u: Array) -> tuple[Array, Array]:
        """One time step: state ``[H, N]``, input ``[H]`` -> new state, output ``[H]``."""
        Abar, Bbar, C = self.discretise()
        v = self.norm(u)
        a, b = _s4d_coefficients(Abar, Bbar, v)
        h = a * h + b
        return h, self._mix(u, _s4d_readout(C, h) + self.D[...] * v)

    def __call__(self, u: Array, chunk: int | str | None) -> Array:
        """The whole sequence at once: ``[T, H]`` -> ``[T, H]`` from the zero state.

        ``chunk = None``: the convolution form (:meth:`kernel`, FFT); an integer or a method name:
        :func:`linear_recurrence`.
        """
        v = self.norm(u)
        if chunk is None:
            y = _causal_convolution(self.kernel(v.shape[0]), v)
        else:
            Abar, Bbar, C = self.discretise()
            y, _ = linear_recurrence(
                lambda v_c: _s4d_coefficients(Abar, Bbar, v_c),
                lambda h, _: _s4d_readout(C, h),
                self.init_state(),
                v,
                chunk,
            )
        return self._mix(u, y + self.D[...] * v)

    def kernel(self, length: int) -> Array:
        """The layer's impulse response ``k_l = Re(sum_n C_n Abar_n^l Bbar_n)``, ``l < length``: ``[length, H]``.

        ``y_t = sum_{s <= t} k_{t-s} v_s`` is the recurrence from the zero state, summed in closed form;
        ``Abar^l = exp(l Delta A)`` exactly (no repeated products).
        """
        dtA, _ = self._step_exponent()
        _, Bbar, C = self.discretise()
        lags = jnp.arange(length, dtype=self.log_dt[...].dtype)
        return jnp.einsum("lhn,hn->lh", jnp.exp(lags[:, None, None] * dtA), C * Bbar).real


def _causal_convolution(kernel: Array, v: Array) -> Array:
    """``y_t = sum_{s <= t} kernel_{t-s} v_s`` per channel, for ``kernel, v`` ``[T, H]``, by FFT.

    Zero-padded to a power of two ``>= 2T - 1`` so the circular convolution has no wrap-around in its first
    ``T`` outputs: ``O(T log T)`` per channel instead of the recurrence's ``T`` sequential steps.
    """
    T = v.shape[0]
    n = 1 << (2 * T - 1).bit_length()
    spectrum = jnp.fft.rfft(v, n, axis=0) * jnp.fft.rfft(kernel, n, axis=0)
    return jnp.fft.irfft(spectrum, n, axis=0)[:T].astype(v.dtype)


def _s4d_coefficients(Abar: Array, Bbar: Array, v: Array) -> tuple[Array, Array]:
    # (a_t, b_t) = (Abar, Bbar u_t) for inputs v [..., H]: complex [..., H, N].
    b = Bbar * v[..., None]
    return jnp.broadcast_to(Abar, b.shape), b


def _s4d_readout(C: Array, h: Array) -> Array:
    # y_t = Re(sum_n C_n h_{t,n}): [..., H, N] -> [..., H].
    return jnp.sum(C * h, axis=-1).real


class MambaLayer(nnx.Module):
    """Pre-norm residual Mamba block: inner width ``E = expand * d_model``, state ``N``, conv kernel ``K``.

    Parameters (``R = dt_rank``): ``in_proj [d_model, 2E]``, ``conv_w [K, E]``, ``conv_b [E]``,
    ``x_proj [E, R + 2N]``, ``dt_proj [R, E] + [E]``, ``A_log [E, N]``, ``D [E]``, ``out_proj [E, d_model]``.
    """

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        M, E, N, K, R = config.d_model, config.d_inner, config.d_state, config.d_conv, config.rank
        self.d_state, self.d_conv, self.rank = N, K, R
        linear = dict(dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.norm = nnx.RMSNorm(M, epsilon=1e-5, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.in_proj = nnx.Linear(M, 2 * E, use_bias=False, **linear)
        # PyTorch's Conv1d default init (fan_in = K for a depthwise kernel), as in the reference Mamba.
        bound = 1 / math.sqrt(K)
        self.conv_w = nnx.Param(_uniform(-bound, bound)(rngs.params(), (K, E), dtype))
        self.conv_b = nnx.Param(_uniform(-bound, bound)(rngs.params(), (E,), dtype))
        self.x_proj = nnx.Linear(E, R + 2 * N, use_bias=False, **linear)
        self.dt_proj = nnx.Linear(
            R, E, kernel_init=_uniform(-(R**-0.5), R**-0.5), bias_init=self._dt_bias_init(config), **linear
        )
        # S4D-Real init: A_n = -(n + 1).
        self.A_log = nnx.Param(jnp.log(jnp.broadcast_to(jnp.arange(1, N + 1, dtype=dtype), (E, N))))
        self.D = nnx.Param(jnp.ones((E,), dtype))
        self.out_proj = nnx.Linear(E, M, use_bias=False, **linear)

    @staticmethod
    def _dt_bias_init(config: Config):
        def init(key, shape, dtype):
            dt = jnp.maximum(_log_uniform_dt(key, shape, dtype, config.dt_min, config.dt_max), 1e-4)
            return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus, so softplus(bias) = dt

        return init

    def _selective(self, c: Array) -> tuple[Array, Array, Array]:
        """Input-dependent ``Delta [..., E]``, ``B [..., N]``, ``C [..., N]`` from the conv output ``c``."""
        dt, B, C = jnp.split(self.x_proj(c), [self.rank, self.rank + self.d_state], axis=-1)
        return jax.nn.softplus(self.dt_proj(dt)), B, C

    def init_state(self) -> tuple[Array, Array]:
        """``(conv_state [K-1, E], h [E, N])``, zeros: the last ``K - 1`` conv inputs and the SSM state."""
        E, N = self.A_log[...].shape
        dtype = self.A_log[...].dtype
        return jnp.zeros((self.d_conv - 1, E), dtype), jnp.zeros((E, N), dtype)

    def _gate_out(self, u: Array, y: Array, c: Array, z: Array) -> Array:
        return u + self.out_proj((y + self.D[...] * c) * jax.nn.silu(z))

    def step(self, state: tuple[Array, Array], u: Array) -> tuple[tuple[Array, Array], Array]:
        """One time step: state, input ``[d_model]`` -> new state, output ``[d_model]``."""
        conv_state, h = state
        v, z = jnp.split(self.in_proj(self.norm(u)), 2, axis=-1)
        # The causal conv over the window (conv_state oldest first, then v), written as K scaled vectors: under
        # vmap a reduction over the window axis compiles to a loop on CPU about 20x slower than this sum.
        w = self.conv_w[...]
        K = w.shape[0]
        acc = w[K - 1] * v
        for k in range(K - 1):
            acc = acc + w[k] * conv_state[k]
        c = jax.nn.silu(acc + self.conv_b[...])
        delta, B, C = self._selective(c)
        a, b = _mamba_coefficients(-jnp.exp(self.A_log[...]), (delta, c, B, C))
        h = a * h + b
        conv_state = jnp.concatenate([conv_state, v[None]], axis=0)[1:]  # the last K - 1 inputs
        return (conv_state, h), self._gate_out(u, _mamba_readout(h, (delta, c, B, C)), c, z)

    def __call__(self, u: Array, chunk: int | None) -> Array:
        """The whole sequence at once: ``[T, d_model]`` -> ``[T, d_model]`` from the zero state."""
        T, K = u.shape[0], self.d_conv
        v, z = jnp.split(self.in_proj(self.norm(u)), 2, axis=-1)
        padded = jnp.concatenate([jnp.zeros((K - 1,) + v.shape[1:], v.dtype), v], axis=0)
        w = self.conv_w[...]
        c = jax.nn.silu(sum(w[k] * padded[k : k + T] for k in range(K)) + self.conv_b[...])
        delta, B, C = self._selective(c)  # [T, E], [T, N], [T, N]
        A = -jnp.exp(self.A_log[...])
        y, _ = linear_recurrence(
            lambda inputs: _mamba_coefficients(A, inputs),
            _mamba_readout,
            self.init_state()[1],
            (delta, c, B, C),
            _scan_chunk(chunk),
        )
        return self._gate_out(u, y, c, z)


def _mamba_coefficients(A: Array, inputs: tuple) -> tuple[Array, Array]:
    # (a_t, b_t) = (exp(Delta_t A), Delta_t c_t B_t): [..., E, N] from Delta, c [..., E] and B [..., N].
    delta, c, B, _ = inputs
    return jnp.exp(delta[..., None] * A), (delta * c)[..., None] * B[..., None, :]


def _mamba_readout(h: Array, inputs: tuple) -> Array:
    # C_t . h_t: [..., E, N] x [..., N] -> [..., E].
    return jnp.einsum("...en,...n->...e", h, inputs[3])


class Network(nnx.Module):
    """Embedding (plus a learned BOS vector), ``num_layers`` SSM blocks, final RMSNorm and output head."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        M = config.d_model
        self.embed = nnx.Embed(config.vocab_size, M, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.bos = nnx.Param(jax.random.normal(rngs.params(), (M,), dtype) / math.sqrt(M))
        layer = S4DLayer if config.kind == "s4d" else MambaLayer
        self.layers = nnx.List([layer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = nnx.RMSNorm(M, epsilon=1e-5, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(M, config.vocab_size, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def init_state(self) -> list:
        """Zero state of every layer."""
        return [layer.init_state() for layer in self.layers]

    def step(self, state: list, u: Array) -> tuple[list, Array]:
        """Consume one input vector ``[d_model]``: new states and next-token logits ``[V]``."""
        new = []
        for layer, s in zip(self.layers, state, strict=True):
            s, u = layer.step(s, u)
            new.append(s)
        return new, self.head(self.norm(u))

    def __call__(self, u: Array, chunk: int | None) -> Array:
        """Inputs ``[T, d_model]`` (BOS first) -> logits ``[T, V]``, all positions in parallel."""
        for layer in self.layers:
            u = layer(u, chunk)
        return self.head(self.norm(u))


# --- the contract model ---------------------------------------------------------------------------------


class Model(DiscreteModel):
    """A state-space language model (S4D or Mamba, by ``config.kind``) as an epjax discrete model.

    The initial law (of ``x_1``) is the stack applied to the learned BOS vector from the zero state. The
    carry is the list of per-layer states: a complex ``[d_model, d_state]`` array for S4D, a pair
    ``(conv_state [d_conv - 1, E], h [E, d_state])`` for Mamba.

    Args:
        config: the architecture.
        temperature: divides the logits when sampling and when scoring.
    """

    family = "ssm"
    xla_cpu_options = XLA_CPU_EMITTERS  # measured faster than jaxlib's YNNPACK fusions (epjax._xla)

    def __init__(self, config: Config, *, temperature: float = 1.0):
        self.init_config(config, Config, temperature=temperature)
        with warnings.catch_warnings():
            # A float64 model may be built outside x64 and used inside it; the graph is dtype-agnostic and
            # no array is allocated here, so JAX's "float64 truncated" warnings are noise.
            warnings.simplefilter("ignore", UserWarning)
            self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: Network(config, rngs=nnx.Rngs(0))))

    def init(self, key: Array) -> nnx.State:
        """Fresh parameters (the NNX state of :class:`Network`), in ``config.dtype``."""
        check_dtype_available(self.config.dtype, name="config.dtype")
        return nnx.split(Network(self.config, rngs=nnx.Rngs(key)))[1]

    def _network(self, params: nnx.State) -> Network:
        return nnx.merge(self.graphdef, params)

    def initial(self, params):
        """Zero states fed the BOS vector: the carry before ``x_1`` and the logits ``[V]`` of ``x_1``."""
        net = self._network(params)
        return net.step(net.init_state(), net.bos[...])

    def step(self, params, carry, token, position):
        """Feed ``embed(token)`` through the stack (``position`` is unused: the model is time homogeneous)."""
        net = self._network(params)
        return net.step(carry, net.embed(token))

    def logits(self, params, x: Array) -> Array:
        """``[T, V]`` logits by the parallel (associative-scan) pass over ``[BOS, x_1 .. x_{T-1}]``."""
        net = self._network(params)
        inputs = jnp.concatenate([net.bos[...][None], net.embed(x[:-1])], axis=0)
        return net(inputs, self.config.scan_chunk)

    def __repr__(self) -> str:
        return f"ssm.Model({self.config}, temperature={self.temperature})"


__all__ = ["Config", "KINDS", "MambaLayer", "Model", "Network", "S4DLayer", "SCAN_METHODS", "linear_recurrence"]
