"""Time reversals against plain Python list manipulations (docs/mathematics.md §2-3)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import epjax


def _blocks_by_hand(x: list, block_size: int) -> list:
    blocks = [x[i : i + block_size] for i in range(0, len(x), block_size)]
    return [item for block in reversed(blocks) for item in block]


def _segments_by_hand(x: list, ends: list) -> list:
    segments, current = [], []
    for item, end in zip(x, ends, strict=True):
        current.append(item)
        if end:
            segments.append(current)
            current = []
    assert not current  # ends[-1] is True
    return [item for segment in reversed(segments) for item in segment]


def _segment_lengths(ends: np.ndarray) -> list:
    stops = np.flatnonzero(ends)
    return list(np.diff(np.concatenate([[-1], stops])))


def _ends_from_lengths(lengths) -> np.ndarray:
    ends = np.zeros(int(sum(lengths)), dtype=bool)
    ends[np.cumsum(lengths) - 1] = True
    return ends


def _random_ends(rng, num_steps: int) -> np.ndarray:
    ends = rng.random(num_steps) < 0.3
    ends[-1] = True
    return ends


@pytest.mark.parametrize("seed", range(5))
def test_reverse_tokens_matches_python(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 50, size=rng.integers(1, 20))
    out = epjax.reverse_tokens(jnp.asarray(x))
    assert out.tolist() == list(x)[::-1]
    assert np.array_equal(epjax.reverse_tokens(out), x)  # involution


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("block_size", [1, 2, 3, 5])
def test_reverse_blocks_matches_python(seed, block_size):
    rng = np.random.default_rng(seed)
    num_blocks = int(rng.integers(1, 7))
    x = rng.integers(0, 50, size=num_blocks * block_size)
    out = epjax.reverse_blocks(jnp.asarray(x), block_size)
    assert out.tolist() == _blocks_by_hand(list(x), block_size)
    assert np.array_equal(epjax.reverse_blocks(out, block_size), x)  # involution


def test_reverse_blocks_edge_cases():
    x = jnp.arange(6)
    assert np.array_equal(epjax.reverse_blocks(x, 1), epjax.reverse_tokens(x))
    assert np.array_equal(epjax.reverse_blocks(x, 6), x)  # one block: identity


@pytest.mark.parametrize("seed", range(8))
def test_reverse_segments_matches_python_and_inverts(seed):
    # One length for all seeds (each new shape recompiles the eager ops); the ends vary.
    rng = np.random.default_rng(seed)
    num_steps = 16
    x = rng.integers(0, 50, size=num_steps)
    ends = _random_ends(rng, num_steps)
    out = epjax.reverse_segments(jnp.asarray(x), jnp.asarray(ends))
    assert out.tolist() == _segments_by_hand(list(x), list(ends))
    # The reversed sequence has its segments in reversed order; reversing again with their ends restores x.
    back_ends = _ends_from_lengths(_segment_lengths(ends)[::-1])
    assert np.array_equal(epjax.reverse_segments(out, jnp.asarray(back_ends)), x)


def test_reverse_segments_special_cases():
    x = jnp.arange(5)
    assert len(_segment_lengths(np.ones(5, bool))) == 5
    assert np.array_equal(epjax.reverse_segments(x, jnp.ones(5, bool)), x[::-1])  # every token a segment
    one = jnp.zeros(5, bool).at[-1].set(True)
    assert np.array_equal(epjax.reverse_segments(x, one), x)  # one segment: identity
    ends = jnp.array([False, True, False, False, True])
    assert epjax.reverse_segments(x, ends).tolist() == [2, 3, 4, 0, 1]


@pytest.mark.parametrize("seed", range(3))
def test_reversals_are_bijections_on_all_short_sequences(seed):
    # Every sequence in [V]^T maps to a distinct sequence: the image of all V^T sequences is all of them.
    rng = np.random.default_rng(seed)
    V, T = 3, 6
    xs = np.array(np.meshgrid(*[np.arange(V)] * T, indexing="ij")).reshape(T, -1).T  # [V^T, T]
    ends = jnp.asarray(_random_ends(rng, T))
    reversals = [
        epjax.reverse_tokens,
        functools.partial(epjax.reverse_blocks, block_size=2),
        functools.partial(epjax.reverse_blocks, block_size=3),
        functools.partial(epjax.reverse_segments, ends=ends),
    ]
    for reversal in reversals:
        images = np.asarray(jax.jit(jax.vmap(reversal))(jnp.asarray(xs)))
        assert len({tuple(row) for row in images}) == V**T


@pytest.mark.parametrize(
    "reversal",
    [
        epjax.reverse_tokens,
        functools.partial(epjax.reverse_blocks, block_size=3),
        functools.partial(epjax.reverse_segments, ends=jnp.array([0, 0, 1, 1, 0, 1], bool)),
    ],
    ids=["tokens", "blocks", "segments"],
)
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float32, jnp.bfloat16])
def test_reversals_under_jit_on_vector_inputs(reversal, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 4)) * 10, dtype=dtype)  # [T, d]
    eager = reversal(x)
    jitted = jax.jit(reversal)(x)
    assert eager.dtype == dtype and jitted.dtype == dtype
    assert eager.shape == x.shape and jitted.shape == x.shape
    assert np.array_equal(np.asarray(eager, np.float64), np.asarray(jitted, np.float64))
    # Rows move as a whole: the permutation is the one found on the row indices.
    perm = np.asarray(reversal(jnp.arange(6)))
    assert np.array_equal(np.asarray(eager, np.float64), np.asarray(x, np.float64)[perm])


def test_reverse_segments_with_traced_ends():
    x = jnp.arange(7)
    ends = jnp.array([0, 1, 0, 0, 1, 0, 1], bool)
    out = jax.jit(epjax.reverse_segments)(x, ends)
    assert out.tolist() == _segments_by_hand(list(range(7)), list(np.asarray(ends)))


def test_reversals_preserve_float64(x64):
    x = jnp.linspace(0.0, 1.0, 12, dtype=jnp.float64).reshape(6, 2)
    ends = jnp.array([0, 1, 0, 0, 0, 1], bool)
    for out in (
        epjax.reverse_tokens(x),
        epjax.reverse_blocks(x, 2),
        jax.jit(epjax.reverse_segments)(x, ends),
    ):
        assert out.dtype == jnp.float64
    assert np.array_equal(epjax.reverse_blocks(x, 2), x.reshape(3, 2, 2)[::-1].reshape(6, 2))
