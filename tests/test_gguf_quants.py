"""GGUF tensor types: epjax's own dequantisers against ``gguf.quants.dequantize``, and the ``gguf`` fallback for
every other type (the K-quants through the reader, from a file written here), and the types nothing decodes."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from epjax.pretrained import _gguf, read_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType
NATIVE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
# Byte offsets of the float16 scales in a block (the rest are quants and sub-block scales): set to sane values,
# so that the comparisons are of finite numbers, not of NaN patterns.
HALF_SCALES = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q2_K": (80, 82),  # scales[16], qs[64], d, dmin
    "Q3_K": (108,),  # hmask[32], qs[64], scales[12], d
    "Q4_K": (0, 2),  # d, dmin, scales[12], qs[128]
    "Q5_K": (0, 2),  # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": (208,),  # ql[128], qh[64], scales[16], d
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
}
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
FALLBACK = (*K_QUANTS, "Q5_0", "Q5_1", "IQ4_NL", "IQ4_XS", "IQ2_XXS", "IQ3_S", "TQ1_0", "TQ2_0", "MXFP4")


def random_blocks(name: str, rows: int, blocks_per_row: int, rng) -> np.ndarray:
    """Random stored bytes ``[rows, blocks_per_row * bytes per block]`` with finite float16 scales."""
    block, nbytes = gguf.GGML_QUANT_SIZES[Q[name]]
    if block == 1:  # F32, F16, BF16: random finite values
        values = rng.standard_normal((rows, blocks_per_row)).astype(np.float32)
        if name == "BF16":
            return (values.view(np.uint32) >> 16).astype("<u2").view(np.uint8)
        return values.astype({"F32": "<f4", "F16": "<f2"}[name]).view(np.uint8)
    raw = rng.integers(0, 256, size=(rows, blocks_per_row, nbytes), dtype=np.uint8)
    for offset in HALF_SCALES.get(name, ()):
        scale = rng.uniform(0.01, 2.0, size=(rows, blocks_per_row)) * rng.choice([-1.0, 1.0], (rows, blocks_per_row))
        raw[..., offset : offset + 2] = scale.astype("<f2")[..., None].view(np.uint8)
    return raw.reshape(rows, -1)


def known(name: str) -> bool:
    return name in Q.__members__


@pytest.mark.parametrize("name", NATIVE)
def test_native_types_equal_gguf_quants(name):
    """epjax's dequantisers (not gguf's) for these types, equal to gguf.quants.dequantize bit for bit."""
    assert name in _gguf.SUPPORTED_TYPES and int(Q[name]) in _gguf._TYPES
    rng = np.random.default_rng(int(Q[name]))
    block, _ = gguf.GGML_QUANT_SIZES[Q[name]]
    data = (rng.standard_normal((4, 128)) * rng.exponential(size=(4, 1))).astype(np.float32)
    stored = np.asarray(gguf.quants.quantize(data, Q[name])).view(np.uint8).reshape(4, -1)
    raw = random_blocks(name, 5, 96 // block, rng)  # 5 rows of 96 values
    for stored_bytes, shape in ((stored, data.shape), (raw, (5, 96))):
        ours = _gguf.dequantize(stored_bytes, name, shape)
        want = gguf.quants.dequantize(stored_bytes, Q[name]).astype(np.float32).reshape(shape)
        assert ours.dtype == np.float32 and ours.shape == shape and np.isfinite(ours).all()
        np.testing.assert_array_equal(ours, want)


@pytest.mark.parametrize("name", [n for n in FALLBACK if known(n)])
def test_other_types_are_dequantised_by_gguf(name):
    qtype = Q[name]
    assert name not in _gguf.SUPPORTED_TYPES
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    assert _gguf.block_layout(int(qtype)) == (name, block, nbytes)
    rng = np.random.default_rng(int(qtype))
    raw = random_blocks(name, 3, 2, rng)
    with np.errstate(all="ignore"):
        want = gguf.quants.dequantize(raw, qtype)
        by_id = _gguf.dequantize(raw, int(qtype), (3, 2 * block))
        by_name = _gguf.dequantize(raw.reshape(-1), name, (3, 2 * block))
    assert by_id.dtype == np.float32 and by_id.shape == (3, 2 * block)
    np.testing.assert_array_equal(by_id, want)
    np.testing.assert_array_equal(by_name, want)
    if name in HALF_SCALES:
        assert np.isfinite(by_id).all()
    with pytest.raises(ValueError, match=f"{name} data for shape \\(3, {2 * block}\\) must be {6 * nbytes} bytes"):
        _gguf.dequantize(raw.reshape(-1)[:-1], name, (3, 2 * block))


def test_k_quant_tensors_read_through_the_reader_fallback(tmp_path):
    """A GGUF file with a tensor of every K-quant type: the reader's tensor() equals gguf.quants.dequantize of
    the same stored bytes (and gguf's own reader)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(tmp_path / "k.gguf"), "llama")
    stored = {}
    for name in K_QUANTS:
        stored[name] = random_blocks(name, 3, 2, rng)  # 3 rows of 512 values
        writer.add_tensor(f"t.{name}", stored[name], raw_dtype=Q[name])
    writer.add_tensor("t.native", rng.standard_normal((3, 64)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    file = read_gguf(tmp_path / "k.gguf")
    theirs = {t.name: t for t in gguf.GGUFReader(tmp_path / "k.gguf").tensors}
    for name in K_QUANTS:
        info = file.tensors[f"t.{name}"]
        assert info.shape == (3, 512) and info.type_name == name and info.nbytes == stored[name].size
        np.testing.assert_array_equal(file.raw(f"t.{name}"), stored[name].reshape(-1))
        got = file.tensor(f"t.{name}")
        want = gguf.quants.dequantize(stored[name], Q[name])
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, gguf.quants.dequantize(theirs[f"t.{name}"].data, Q[name]))
        assert file.tensor(f"t.{name}", np.float64).dtype == np.float64
    np.testing.assert_array_equal(file.tensor("t.native"), theirs["t.native"].data)


def test_types_nothing_decodes_are_refused(tmp_path):
    assert known("Q8_K")  # gguf knows its size but does not dequantise it
    block, nbytes = gguf.GGML_QUANT_SIZES[Q.Q8_K]
    raw = np.zeros(2 * nbytes, np.uint8)
    with pytest.raises(ValueError, match="cannot dequantise type Q8_K: neither epjax nor the installed gguf package"):
        _gguf.dequantize(raw, int(Q.Q8_K), (2 * block,))
    with pytest.raises(ValueError, match=r"cannot dequantise type 'Q9_9' \(the gguf package is not installed, or"):
        _gguf.dequantize(raw, "Q9_9", (2 * block,))
    with pytest.raises(ValueError, match=r"cannot dequantise type type id 250 .*epjax reads F32, F16, Q4_0, Q4_1"):
        _gguf.dequantize(raw, 250, (2 * block,))
    assert _gguf.block_layout(250) is None and _gguf.type_name(250) == "type id 250"

    writer = gguf.GGUFWriter(str(tmp_path / "q8k.gguf"), "llama")
    writer.add_tensor("t.q8k", np.zeros((2, nbytes), np.uint8), raw_dtype=Q.Q8_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    file = read_gguf(tmp_path / "q8k.gguf")
    assert file.raw("t.q8k").size == 2 * nbytes  # its bytes can be read, not decoded
    with pytest.raises(ValueError, match=r"q8k.gguf: tensor 't.q8k': cannot dequantise type Q8_K"):
        file.tensor("t.q8k")
