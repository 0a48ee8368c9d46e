"""Fast paths restructured for speed equal their obvious form (float64, to round-off).

The GRU's scoring scan reads its input projection as three gate blocks (``epjax.rnn._gate_blocks``); the step
function must give the same state whether it gets the blocks or the whole ``[G H]`` projection, and the
scored sequence must equal the one-token ``step`` loop for a deeper stack than tests/test_rnn.py uses.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from epjax import rnn
from epjax.rnn import _gate_blocks, _linear


def _params(model, seed):
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), abstract)


@pytest.mark.parametrize("cell", rnn.CELLS)
def test_gate_blocks_are_the_columns_of_the_input_projection(x64, cell):
    model = rnn.Model(rnn.Config(vocab_size=5, hidden_size=4, cell=cell, dtype="float64"))
    p = nnx.to_pure_dict(_params(model, 0))["layers"][0]
    x = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)))
    whole = _linear(p["input"], x)
    for blocks in sorted({1, model.config.num_gates}):
        got = jnp.concatenate(_gate_blocks(p["input"], x, blocks), axis=-1)
        np.testing.assert_allclose(got, whole, rtol=1e-14, atol=1e-14)
    state = jnp.asarray(np.random.default_rng(2).normal(size=4))
    state = (state, -state) if cell == "lstm" else state
    blocks = _gate_blocks(p["input"], x[0], model.config.num_gates)
    got = rnn.cell_update(cell, p["recurrent"], state, blocks)
    want = rnn.cell_update(cell, p["recurrent"], state, whole[0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14), got, want)


@pytest.mark.parametrize("cell", rnn.CELLS)
@pytest.mark.parametrize("T", [1, 2, 6, 11])  # T - 1 < V projects the embeddings, T - 1 >= V gathers the table
def test_scoring_equals_the_step_loop_three_layers(x64, cell, T):
    model = rnn.Model(rnn.Config(vocab_size=6, hidden_size=5, num_layers=3, cell=cell, dtype="float64"))
    params = _params(model, 3)
    x = jnp.asarray(np.random.default_rng(T).integers(0, 6, size=T), jnp.int32)
    carry, logits = model.initial(params)
    rows = [logits]
    for t, token in enumerate(x[:-1]):
        carry, logits = model.step(params, carry, token, t)
        rows.append(logits)
    np.testing.assert_allclose(model.logits(params, x), jnp.stack(rows), rtol=1e-12, atol=1e-12)
