"""Recurrent language models (Elman, GRU, LSTM) over a discrete vocabulary (docs/mathematics.md §1, table row "RNN").

The network is embedding -> ``num_layers`` stacked recurrent cells -> a linear read-out with bias:

    e_t      = E[x_t]                                      (embedding, [embed_size])
    s^l_t    = cell(s^l_{t-1}, h^{l-1}_t),  h^0_t = e_t     (layer l = 1..L, zero initial state s^l_0 = 0)
    logits_t = W h^L_t + b                                  (law of x_{t+1}; [vocab_size])

The deterministic summary of the past (docs/mathematics.md §1) is the stack of layer states
``s_t = (s^1_t, ..., s^L_t)``
(hidden states, plus the memory cells for an LSTM). The first token is drawn from the read-out of the zero
state, ``softmax(W 0 + b) = softmax(b)``: the initial distribution after BOS is learned through ``b``.

The cells follow PyTorch's equations (``torch.nn.RNN``/``GRU``/``LSTM``), so that weights carry over
one to one. Each layer has an input projection ``g^x = h^{l-1} W_ih + b_ih`` and a recurrent projection
``g^h = h W_hh + b_hh`` (kernels stored ``[in, gates * hidden]``, the transpose of PyTorch's ``weight_ih``),
with the gate blocks in PyTorch's order:

    elman:  h' = tanh(g^x + g^h)
    gru:    r = sigmoid(g^x_r + g^h_r),  z = sigmoid(g^x_z + g^h_z),  n = tanh(g^x_n + r * g^h_n),
            h' = (1 - z) * n + z * h                          (blocks r, z, n)
    lstm:   i, f, o = sigmoid(g^x + g^h) blocks, g = tanh(g^x_g + g^h_g),
            c' = f * c + i * g,  h' = o * tanh(c')            (blocks i, f, g, o; state (h, c))

The GRU keeps the recurrent bias of its candidate inside the reset gate, ``r * (W_hn h + b_hn)``, as PyTorch
does; ``flax.nnx.GRUCell`` has no ``b_hn`` (its docstring shows one, its code does not), which is one reason
the cells are written here rather than taken from flax. The other is speed: scoring a whole sequence computes
the input projections of all time steps with one matrix product before the scan, so the scanned step only
does the recurrent product ``h W_hh`` and the gate arithmetic; sampling at least ``vocab_size`` tokens
projects the whole vocabulary once (:class:`DecodingParams`) and each step gathers its token's row.

Parameters are the ``nnx.State`` of a ``flax.nnx`` module (``nnx.split``); all maths below is written as
pure functions of that state.

>>> import jax, jax.numpy as jnp
>>> model = Model(Config(vocab_size=5, hidden_size=8, cell="lstm", num_layers=2))
>>> params = model.init(jax.random.key(0))
>>> model.log_probs(params, jnp.array([0, 3, 1, 4])).shape
(4,)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from epjax._checks import check_dtype_available, check_positive_int
from epjax._xla import XLA_CPU_EMITTERS
from epjax.discrete import DiscreteModel

Array = jax.Array
PyTree = Any

CELLS = ("elman", "gru", "lstm")
_GATES = {"elman": 1, "gru": 3, "lstm": 4}
_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of a recurrent language model (frozen and hashable: a static argument of ``jax.jit``).

    Attributes:
        vocab_size: number of token ids ``V``.
        hidden_size: width ``H`` of every recurrent layer.
        embed_size: width of the token embedding (``None``: equal to ``hidden_size``).
        num_layers: number of stacked recurrent layers ``L >= 1``.
        cell: ``"elman"`` (tanh), ``"gru"`` or ``"lstm"``.
        dtype: parameter (and computation) dtype, ``"float32"`` or ``"float64"`` (the latter needs
            ``jax.enable_x64``).
    """

    vocab_size: int
    hidden_size: int = 64
    embed_size: int | None = None
    num_layers: int = 1
    cell: str = "gru"
    dtype: str = "float32"

    def __post_init__(self):
        check_positive_int("vocab_size", self.vocab_size)
        check_positive_int("hidden_size", self.hidden_size)
        if self.embed_size is None:
            object.__setattr__(self, "embed_size", self.hidden_size)
        check_positive_int("embed_size", self.embed_size)
        check_positive_int("num_layers", self.num_layers)
        if self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {CELLS}, got {self.cell!r}.")
        if self.dtype not in _DTYPES:
            raise ValueError(f"`dtype` must be one of {_DTYPES}, got {self.dtype!r}.")

    @property
    def num_gates(self) -> int:
        """Gate blocks per layer: 1 (Elman), 3 (GRU) or 4 (LSTM)."""
        return _GATES[self.cell]

    def to_dict(self) -> dict:
        """The fields as a JSON-friendly dictionary (``Config(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)


# --- the network, as flax NNX modules (used for initialisation and as the parameter container) -------------


class Cell(nnx.Module):
    """One recurrent layer: input projection ``x W_ih + b_ih`` and recurrent projection ``h W_hh + b_hh``.

    Kernels are ``[in, G * H]`` with the ``G`` gate blocks side by side (order in the module docstring).
    Initialisation: LeCun-normal input kernels, orthogonal recurrent kernel blocks (one per gate, so each
    gate's recurrence starts norm-preserving), zero biases except an LSTM forget-gate bias of 1
    (Jozefowicz et al., 2015), which lets gradients through long sequences early in training.
    """

    def __init__(self, in_size: int, config: Config, *, rngs: nnx.Rngs):
        H, G = config.hidden_size, config.num_gates
        dtype = jnp.dtype(config.dtype)
        bias_init = _forget_gate_bias(H) if config.cell == "lstm" else nnx.initializers.zeros_init()
        self.input = nnx.Linear(in_size, G * H, bias_init=bias_init, param_dtype=dtype, rngs=rngs)
        self.recurrent = nnx.Linear(H, G * H, kernel_init=_block_orthogonal(G), param_dtype=dtype, rngs=rngs)


def _block_orthogonal(num_blocks: int):
    """Initializer of an ``[H, G H]`` kernel made of ``G`` independent orthogonal ``[H, H]`` blocks."""
    orthogonal = nnx.initializers.orthogonal()

    def init(key, shape, dtype=jnp.float32):
        H = shape[0]
        keys = jax.random.split(key, num_blocks)
        return jnp.concatenate([orthogonal(k, (H, H), dtype) for k in keys], axis=1)

    return init


def _forget_gate_bias(hidden_size: int):
    """Initializer of an LSTM bias ``[4 H]``: 1 on the forget-gate block (i, f, g, o order), 0 elsewhere."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype).at[hidden_size : 2 * hidden_size].set(1.0)

    return init


class Network(nnx.Module):
    """Embedding ``[V, E]``, ``L`` :class:`Cell` layers and the read-out ``Linear(H, V)`` with bias."""

    def __init__(self, config: Config, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.dtype)
        # Unit-variance embeddings (as torch.nn.Embedding): the first layer is driven at O(1) from the start.
        self.embed = nnx.Embed(
            config.vocab_size,
            config.embed_size,
            embedding_init=nnx.initializers.normal(1.0),
            param_dtype=dtype,
            rngs=rngs,
        )
        sizes = [config.embed_size] + [config.hidden_size] * (config.num_layers - 1)
        self.layers = nnx.List([Cell(size, config, rngs=rngs) for size in sizes])
        self.head = nnx.Linear(config.hidden_size, config.vocab_size, param_dtype=dtype, rngs=rngs)


# --- pure maths over the parameter state -------------------------------------------------------------------


def _linear(p: PyTree, x: Array) -> Array:
    return x @ p["kernel"][...] + p["bias"][...]


def cell_update(cell: str, p: PyTree, state: PyTree, gx: Array | tuple[Array, ...]) -> PyTree:
    """One recurrent step of a layer given its precomputed input projection ``gx = x W_ih + b_ih``.

    Args:
        cell: ``"elman"``, ``"gru"`` or ``"lstm"``.
        p: the layer's ``recurrent`` parameters (``kernel [H, G H]``, ``bias [G H]``).
        state: ``h [H]`` (Elman, GRU) or ``(h, c)`` (LSTM).
        gx: ``[G H]`` input projection of this step, or a tuple of its column blocks in order
            (:func:`sequence_logits` scans over the GRU's three gate blocks; :func:`_gate_blocks` says why).

    Returns:
        The new state, same structure as ``state``.
    """
    if cell == "lstm":
        h, c = state
        gx = jnp.concatenate(gx, axis=-1) if isinstance(gx, tuple) else gx
        z = gx + _linear(p, h)
        # Both nonlinearities over the whole contiguous [4 H] pre-activation, then the gates' quarters: twice
        # the transcendental work, but XLA's CPU loops vectorise it, which was faster than four quarter-width
        # fusions of sigmoid(i), sigmoid(f), tanh(g), sigmoid(o) (benchmarks/RESULTS.md).
        i, f, _, o = jnp.split(jax.nn.sigmoid(z), 4, axis=-1)
        g = jnp.split(jnp.tanh(z), 4, axis=-1)[2]
        c = f * c + i * g
        return jnp.tanh(c) * o, c
    gh = _linear(p, state)
    if cell == "gru":
        xr, xz, xn = gx if isinstance(gx, tuple) else jnp.split(gx, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return n + z * (state - n)  # = (1 - z) n + z h, one multiply fewer
    gx = jnp.concatenate(gx, axis=-1) if isinstance(gx, tuple) else gx
    return jnp.tanh(gx + gh)


def _gate_blocks(p: PyTree, x: Array, num_blocks: int) -> tuple[Array, ...]:
    """``x W_ih + b_ih`` ``[..., G H]`` as ``num_blocks`` column blocks, each its own matrix product.

    The GRU's scoring scan reads its step's input projection as three separate gate arrays: slicing the gates
    out of one ``[T, 3 H]`` array inside the step's fused gate arithmetic made XLA's CPU loop slower (GRU
    scoring 1.45x faster with the blocks, benchmarks/RESULTS.md). Each block is the same sum as the
    corresponding columns of the whole product.
    """
    kernels = jnp.split(p["kernel"][...], num_blocks, axis=-1)
    biases = jnp.split(p["bias"][...], num_blocks, axis=-1)
    return tuple(x @ w + b for w, b in zip(kernels, biases, strict=True))


def _output(cell: str, state: PyTree) -> Array:
    """The hidden vector ``h`` a layer passes up (and the top layer to the read-out)."""
    return state[0] if cell == "lstm" else state


class DecodingParams(NamedTuple):
    """The parameters as the sampler's ``step`` reads them (:meth:`Model.decoding_params`).

    Attributes:
        params: the parameter state.
        input_table: ``[V, G H]`` first-layer input projections of the whole vocabulary, ``E W_ih + b_ih``.
    """

    params: PyTree
    input_table: Array


def _zero_state(cell: str, hidden_size: int, dtype) -> PyTree:
    h = jnp.zeros((hidden_size,), dtype)
    return (h, h) if cell == "lstm" else h


@functools.partial(jax.jit, static_argnums=0)
def sequence_logits(config: Config, params: PyTree, x: Array) -> Array:
    """``[T, V]`` logits of every token of ``x`` given its past; row 0 is the initial law's (``W 0 + b``).

    Teacher forcing layer by layer: one matrix product gives a layer's input projections for all steps, one
    ``lax.scan`` of :func:`cell_update` runs its recurrence, and one matrix product gives the read-out.
    Jitted with ``config`` static, so eager calls compile once per configuration and length.

    Args:
        config: the model's :class:`Config`.
        params: its parameter state.
        x: int ``[T]`` token ids (unchecked; ``Model.log_probs`` validates them).

    Returns:
        ``[T, V]`` logits in the parameter dtype.
    """
    c = config
    dtype = params["head"]["kernel"][...].dtype
    tokens = x[:-1]  # the last token conditions nothing
    embedding = params["embed"]["embedding"][...]
    first = params["layers"][0]["input"]
    # The GRU's step reads its input projection as three gate blocks (_gate_blocks); the LSTM's whole [4 H]
    # pre-activation goes through both nonlinearities at once (cell_update), so it is read as one array.
    blocks = c.num_gates if c.cell == "gru" else 1
    if c.vocab_size <= tokens.shape[0]:
        # Project the whole vocabulary once ([V, G H]) and gather: no more work than projecting T embeddings,
        # and under vmap the table is shared by the whole batch.
        gx = tuple(block[tokens] for block in _gate_blocks(first, embedding, blocks))
    else:
        gx = _gate_blocks(first, embedding[tokens], blocks)  # blocks x [T - 1, G H / blocks]
    for layer in range(c.num_layers):
        recurrent = params["layers"][layer]["recurrent"]

        def body(state, gx_t, recurrent=recurrent):
            state = cell_update(c.cell, recurrent, state, gx_t)
            return state, _output(c.cell, state)

        _, hs = jax.lax.scan(body, _zero_state(c.cell, c.hidden_size, dtype), gx)  # [T - 1, H]
        if layer + 1 < c.num_layers:
            gx = _gate_blocks(params["layers"][layer + 1]["input"], hs, blocks)
    h0 = _output(c.cell, _zero_state(c.cell, c.hidden_size, dtype))
    return jnp.concatenate([_linear(params["head"], h0)[None], _linear(params["head"], hs)], axis=0)


# --- the model --------------------------------------------------------------------------------------------


class Model(DiscreteModel):
    """A recurrent language model as an epjax discrete model (Elman, GRU or LSTM; see the module docstring).

    ``step`` advances all layers by one token (sampling); ``logits`` scores a whole sequence layer by layer
    (:func:`sequence_logits`), each layer one ``lax.scan`` of the same :func:`cell_update` with its input
    projections computed for all time steps at once. Forward and reversed sequences are scored by the same
    code.

    Args:
        config: the sizes (:class:`Config`).
        temperature: divides the logits when sampling and scoring (``> 0``).

    Attributes:
        config: the :class:`Config`.
        graphdef: the static ``nnx`` graph of :class:`Network`; ``nnx.merge(model.graphdef, params)``
            rebuilds the flax module.
        family: ``"rnn"`` (with ``config`` enough to rebuild the model, see ``epjax.train.build_model``).
    """

    family = "rnn"
    xla_cpu_options = XLA_CPU_EMITTERS  # measured faster than jaxlib's YNNPACK fusions (epjax._xla)

    def __init__(self, config: Config, *, temperature: float = 1.0):
        self.init_config(config, Config, temperature=temperature)
        with warnings.catch_warnings():
            # Only shapes are traced here; a float64 config outside x64 must not warn at construction.
            warnings.filterwarnings("ignore", message=".*float64.*", category=UserWarning)
            abstract = nnx.eval_shape(lambda: Network(config, rngs=nnx.Rngs(0)))
        self.graphdef = nnx.graphdef(abstract)

    def init(self, key: Array) -> nnx.State:
        """Fresh parameters: the ``nnx.State`` of a newly initialised :class:`Network`."""
        check_dtype_available(self.config.dtype, name="config.dtype")
        return nnx.state(Network(self.config, rngs=nnx.Rngs(key)))

    def decoding_params(self, params: PyTree, num_steps: int) -> PyTree:
        """``params`` and the first layer's input projections of the whole vocabulary (:class:`DecodingParams`).

        Used when sampling at least ``vocab_size`` tokens: each step then gathers its token's row instead of
        projecting its embedding (as :func:`sequence_logits` does for scoring). Fewer steps: ``params``.
        """
        if num_steps < self.config.vocab_size:
            return params
        embedding = params["embed"]["embedding"][...]
        return DecodingParams(params, _linear(params["layers"][0]["input"], embedding))

    def initial(self, params: PyTree) -> tuple[tuple, Array]:
        """Zero states of all layers and the first token's logits ``W 0 + b`` ``[V]``."""
        c = self.config
        state = _zero_state(c.cell, c.hidden_size, params["head"]["kernel"][...].dtype)
        carry = tuple(state for _ in range(c.num_layers))
        return carry, _linear(params["head"], _output(c.cell, state))

    def step(self, params: PyTree, carry: tuple, token: Array, position: Array) -> tuple[tuple, Array]:
        """Feed ``token`` through every layer; return the new layer states and next-token logits ``[V]``.

        ``params`` is the parameter state or its :class:`DecodingParams`.
        """
        cell = self.config.cell
        table = None
        if isinstance(params, DecodingParams):
            params, table = params
        h = params["embed"]["embedding"][...][token] if table is None else None
        new_carry = []
        for layer, state in enumerate(carry):
            p = params["layers"][layer]
            gx = table[token] if layer == 0 and table is not None else _linear(p["input"], h)
            state = cell_update(cell, p["recurrent"], state, gx)
            h = _output(cell, state)
            new_carry.append(state)
        return tuple(new_carry), _linear(params["head"], h)

    def logits(self, params: PyTree, x: Array) -> Array:
        """``[T, V]`` logits of each token given its past (row 0: the initial law); ``sequence_logits``."""
        return sequence_logits(self.config, params, x)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"rnn.Model({c.cell}, vocab_size={c.vocab_size}, hidden_size={c.hidden_size}, "
            f"embed_size={c.embed_size}, num_layers={c.num_layers}, dtype={c.dtype}, "
            f"temperature={self.temperature})"
        )


def num_parameters(params: PyTree) -> int:
    """Total number of scalar parameters in a parameter tree."""
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


__all__ = ["CELLS", "Cell", "Config", "Model", "Network", "cell_update", "num_parameters", "sequence_logits"]
