"""State-space language models: a linear time-invariant diagonal SSM (S4D) and a selective SSM (Mamba).

Both are residual stacks over token embeddings whose deterministic summary of the past (SPEC §1) is the
stack of per-layer recurrent states, so every conditional ``p(x_{t+1} | x_<=t)`` is explicit and cheap:

    e_0 = bos,  e_t = embed(x_t)                 (a learned BOS vector is the input at position 0, so the
    u^0 = e;    u^{l+1} = u^l + Block_l(u^l)      law of x_1 is learned; SPEC §1 "after the BOS token")
    logits_t = W_out RMSNorm(u^L_t) + b_out      row t: the law of x_{t+1} given x_<=t

Each layer's core is a diagonal linear recurrence ``h_t = a_t * h_{t-1} + b_t`` (elementwise):

``kind="s4d"`` (Gu et al. 2022, "On the parameterization and initialization of diagonal state space
models"), per channel ``d < d_model`` and mode ``n < d_state``, complex:

    A = -exp(log_A_real) + i A_imag,  Delta = exp(log_dt)       (S4D-Lin init: A_n = -1/2 + i pi n)
    Abar = exp(Delta A),  Bbar = (Abar - 1) / A                   (zero-order hold, B = 1 absorbed in C)
    h_t = Abar h_{t-1} + Bbar u_t,   y_t = Re(sum_n C_n h_{t,n}) + D u_t
    Block(u) = GLU(W gelu(y)) applied to RMSNorm(u)               (GLU(a, b) = a * sigmoid(b))

``kind="mamba"`` (Gu & Dao 2023, the selective scan of ``mamba_simple.py``), inner width
``E = expand * d_model``:

    (v, z) = W_in RMSNorm(u)                                 [E] each
    c_t = silu(sum_k w_k * v_{t-K+1+k} + w_b)                 causal depthwise conv, kernel K = d_conv
    Delta_t = softplus(W_dt (W_r c_t) + b_dt),  B_t = W_B c_t,  C_t = W_C c_t     (input-dependent)
    h_t = exp(Delta_t A) * h_{t-1} + Delta_t B_t c_t,  A = -exp(A_log)  [E, N] real
    y_t = C_t . h_t + D c_t;   Block(u)_t = W_out (y_t * silu(z_t))

The Mamba summary holds, per layer, the last ``K - 1`` conv inputs and ``h``. Both models are time
homogeneous (no positional input), as the EP of SPEC §2 requires of the scoring model.

Scoring (:meth:`Model.logits`) runs every layer over the whole sequence at once, solving the linear
recurrence with ``jax.lax.associative_scan`` on the pairs ``(a_t, b_t)`` under
``(a, b) o (a', b') = (a a', a' b + b')`` (the inputs, hence ``a_t, b_t``, are known for all t in
parallel); sampling uses the recurrent :meth:`Model.step` in ``lax.scan``. The two agree to round-off.
The scan is done in time chunks of at most ``scan_chunk`` steps carried by a sequential scan, which
bounds the ``[chunk, width, d_state]`` intermediates.

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
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from epjax._checks import check_positive_int
from epjax._discrete import DiscreteModel, check_temperature, frozen_config

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
        scan_chunk: longest stretch of time solved by one associative scan when scoring (memory bound).
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
    scan_chunk: int = 256
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "num_layers", "d_state", "expand", "d_conv", "scan_chunk"):
            check_positive_int(name, getattr(self, name))
        if self.dt_rank is not None:
            check_positive_int("dt_rank", self.dt_rank)
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES}, got {self.dtype!r}.")
        for name in ("dt_min", "dt_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
        if self.dt_min > self.dt_max:
            raise ValueError(f"`dt_min` must be <= `dt_max`, got dt_min={self.dt_min!r} > dt_max={self.dt_max!r}.")

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


def linear_recurrence(a: Array, b: Array, h0: Array, readout, chunk: int, extra: PyTree = None):
    """Solve ``h_t = a_t * h_{t-1} + b_t`` for ``t < T``; return ``readout`` of every state and ``h_{T-1}``.

    Time is cut into chunks of at most ``chunk`` steps: inside a chunk ``jax.lax.associative_scan`` (depth
    ``log2(chunk)``), across chunks a sequential ``lax.scan`` carries ``h``, so only ``[chunk, ...]`` states
    live at once and the readout (e.g. ``C_t . h_t``) is applied chunk by chunk.

    Args:
        a: ``[T, ...]`` multipliers.
        b: ``[T, ...]`` inputs, same shape as ``a``.
        h0: ``[...]`` state before ``t = 0``.
        readout: ``(h [L, ...], extra [L, ...]) -> y [L, ...]``.
        chunk: longest chunk ``L``.
        extra: a pytree of ``[T, ...]`` arrays handed to ``readout`` chunk by chunk (``None``: nothing).

    Returns:
        ``y [T, ...]`` and the last state ``h_{T-1}``.

    >>> a, b = jnp.full((5, 1), 0.5), jnp.ones((5, 1))
    >>> y, h = linear_recurrence(a, b, jnp.zeros(1), lambda h, _: h, chunk=2)
    >>> y[:, 0].tolist()
    [1.0, 1.5, 1.75, 1.875, 1.9375]
    """
    T = b.shape[0]
    L = min(chunk, T)
    num_chunks = -(-T // L)
    pad = num_chunks * L - T

    def chunked(x, fill):
        # Padding with the identity map (a = 1, b = 0) leaves h unchanged; padded outputs are dropped.
        if pad:
            x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)])
        return x.reshape((num_chunks, L) + x.shape[1:])

    a, b = chunked(a, 1), chunked(b, 0)
    extra = jax.tree_util.tree_map(lambda x: chunked(x, 0), extra)

    def body(h, inputs):
        a_c, b_c, extra_c = inputs
        b_c = b_c.at[0].add(a_c[0] * h)  # fold the carried state into the chunk's first input
        _, hs = jax.lax.associative_scan(_combine, (a_c, b_c))
        return hs[-1], readout(hs, extra_c)

    if num_chunks == 1:
        h_last, y = body(h0, jax.tree_util.tree_map(lambda x: x[0], (a, b, extra)))
        return y[:T], h_last
    h_last, y = jax.lax.scan(body, h0, (a, b, extra))
    return y.reshape((num_chunks * L,) + y.shape[2:])[:T], h_last


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
        self.log_dt = nnx.Param(jnp.log(_log_uniform_dt(rngs.params(), (H,), dtype, config.dt_min, config.dt_max)))
        self.log_A_real = nnx.Param(jnp.full((H, N), math.log(0.5), dtype))
        self.A_imag = nnx.Param(jnp.broadcast_to(math.pi * jnp.arange(N, dtype=dtype), (H, N)))
        # C ~ CN(0, 1): unit complex variance, half in each part.
        self.C_re = nnx.Param(jax.random.normal(rngs.params(), (H, N), dtype) * math.sqrt(0.5))
        self.C_im = nnx.Param(jax.random.normal(rngs.params(), (H, N), dtype) * math.sqrt(0.5))
        self.D = nnx.Param(jax.random.normal(rngs.params(), (H,), dtype))
        self.out = nnx.Linear(H, 2 * H, dtype=dtype, param_dtype=dtype, rngs=rngs)

    def _discretise(self) -> tuple[Array, Array, Array]:
        """``(Abar, Bbar, C)``, each complex ``[H, N]`` (zero-order hold)."""
        A = -jnp.exp(self.log_A_real[...]) + 1j * self.A_imag[...]
        dA = jnp.exp(self.log_dt[...])[:, None] * A
        Abar = jnp.exp(dA)
        Bbar = (Abar - 1) / A
        return Abar, Bbar, self.C_re[...] + 1j * self.C_im[...]

    def _mix(self, u: Array, y: Array) -> Array:
        a, g = jnp.split(self.out(jax.nn.gelu(y)), 2, axis=-1)
        return u + a * jax.nn.sigmoid(g)

    def init_state(self) -> Array:
        """Zero complex state ``[H, N]``."""
        dtype = self.log_dt[...].dtype
        return jnp.zeros(self.log_A_real[...].shape, jnp.result_type(dtype, jnp.complex64))

    def step(self, h: Array, u: Array) -> tuple[Array, Array]:
        """One time step: state ``[H, N]``, input ``[H]`` -> new state, output ``[H]``."""
        Abar, Bbar, C = self._discretise()
        v = self.norm(u)
        h = Abar * h + Bbar * v[:, None]
        y = jnp.sum(C * h, axis=-1).real + self.D[...] * v
        return h, self._mix(u, y)

    def __call__(self, u: Array, chunk: int) -> Array:
        """The whole sequence at once: ``[T, H]`` -> ``[T, H]`` (zero initial state)."""
        Abar, Bbar, C = self._discretise()
        v = self.norm(u)
        b = Bbar * v[:, :, None]  # [T, H, N]
        a = jnp.broadcast_to(Abar, b.shape)
        y, _ = linear_recurrence(a, b, self.init_state(), lambda hs, _: jnp.sum(C * hs, axis=-1).real, chunk)
        return self._mix(u, y + self.D[...] * v)


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

    def step(self, state: tuple[Array, Array], u: Array) -> tuple[tuple[Array, Array], Array]:
        """One time step: state, input ``[d_model]`` -> new state, output ``[d_model]``."""
        conv_state, h = state
        v, z = jnp.split(self.in_proj(self.norm(u)), 2, axis=-1)
        window = jnp.concatenate([conv_state, v[None]], axis=0)  # [K, E], oldest first
        c = jax.nn.silu(jnp.sum(self.conv_w[...] * window, axis=0) + self.conv_b[...])
        delta, B, C = self._selective(c)
        A = -jnp.exp(self.A_log[...])
        h = jnp.exp(delta[:, None] * A) * h + (delta * c)[:, None] * B[None, :]
        y = h @ C + self.D[...] * c
        return (window[1:], h), u + self.out_proj(y * jax.nn.silu(z))

    def __call__(self, u: Array, chunk: int) -> Array:
        """The whole sequence at once: ``[T, d_model]`` -> ``[T, d_model]`` (zero initial state)."""
        T = u.shape[0]
        K = self.d_conv
        v, z = jnp.split(self.in_proj(self.norm(u)), 2, axis=-1)
        padded = jnp.concatenate([jnp.zeros((K - 1,) + v.shape[1:], v.dtype), v], axis=0)
        w = self.conv_w[...]
        conv = sum(w[k] * padded[k : k + T] for k in range(K))
        c = jax.nn.silu(conv + self.conv_b[...])
        delta, B, C = self._selective(c)  # [T, E], [T, N], [T, N]
        A = -jnp.exp(self.A_log[...])
        a = jnp.exp(delta[:, :, None] * A)  # [T, E, N]
        b = (delta * c)[:, :, None] * B[:, None, :]  # [T, E, N]

        y, _ = linear_recurrence(
            a, b, self.init_state()[1], lambda hs, C_c: jnp.einsum("ten,tn->te", hs, C_c), chunk, extra=C
        )
        y = y + self.D[...] * c
        return u + self.out_proj(y * jax.nn.silu(z))


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

    def __call__(self, u: Array, chunk: int) -> Array:
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

    def __init__(self, config: Config, *, temperature: float = 1.0):
        if not isinstance(config, Config):
            raise ValueError(f"`config` must be an epjax.ssm.Config, got {type(config).__name__}.")
        self.config = config
        self.vocab_size = config.vocab_size
        self.temperature = check_temperature(temperature)
        self.graphdef, _ = nnx.split(nnx.eval_shape(lambda: Network(config, rngs=nnx.Rngs(0))))

    def init(self, key: Array) -> nnx.State:
        """Fresh parameters (the NNX state of :class:`Network`)."""
        return nnx.split(Network(self.config, rngs=nnx.Rngs(key)))[1]

    def _network(self, params: nnx.State) -> Network:
        return nnx.merge(self.graphdef, params)

    def initial(self, params):
        net = self._network(params)
        return net.step(net.init_state(), net.bos[...])

    def step(self, params, carry, token, position):
        net = self._network(params)
        return net.step(carry, net.embed(token))

    def logits(self, params, x: Array) -> Array:
        """``[T, V]`` logits by the parallel (associative-scan) pass over ``[BOS, x_1 .. x_{T-1}]``."""
        net = self._network(params)
        inputs = jnp.concatenate([net.bos[...][None], net.embed(x[:-1])], axis=0)
        return net(inputs, self.config.scan_chunk)

    def __repr__(self) -> str:
        return f"ssm.Model({self.config}, temperature={self.temperature})"


__all__ = ["Config", "KINDS", "MambaLayer", "Model", "Network", "S4DLayer", "linear_recurrence"]
