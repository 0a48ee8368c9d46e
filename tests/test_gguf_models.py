"""GGUF files of Qwen2, Qwen3 and GPT-2, and the qwen2 / SentencePiece GGUF tokenizers, against transformers.

Oracles: transformers loading the same GGUF file (``from_pretrained(folder, gguf_file=name)``: its Qwen2, Qwen3 and
GPT-2 models, and its tokenizers); ``gguf.quants.dequantize`` for the K-quant fixtures. The files are tiny random
models written here with ``gguf.GGUFWriter``: every tensor in F32, in Q8_0, and with the matrices whose rows hold
256 values (the K-quant block) in Q4_K or Q6_K -- the ``gguf`` package cannot quantise those, so their blocks
are random bytes with small float16 scales -- so the K-quant path is exercised from file to log-probabilities.
transformers dequantises with ``gguf.quants.dequantize``, epjax with its own decoders for F32 and Q8_0 (equal bit
for bit, tests/test_gguf_quants.py) and with ``gguf`` for the K-quants, so both run the same weights and the
log-probabilities agree to float32 rounding (1e-5; activations are O(1) over two layers). A wrong layout --
a permuted Q/K, an untransposed GPT-2 kernel, a missing bias or norm -- moves them by O(0.1). Logits are
compared at 3e-5: measured against epjax in float64 on the qwen2 file, epjax's float32 logits are off by up to
7e-6 and transformers' by up to 2.2e-5 (its GGUF kernels compute in float32 even when asked for float64, so it
cannot serve as a float64 reference itself).

Qwen3's head size: transformers' GGUF loader ignores ``qwen3.attention.key_length`` and keeps ``Qwen3Config``'s
default ``head_dim = 128``, so the Qwen3 files here have 128-wide heads (as every released Qwen3 does), which
differs from ``embedding_length / head_count`` -- the case the key length is for.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")

from helpers import train_bpe  # noqa: E402
from test_pretrained import (  # noqa: E402
    CORPUS,
    _decode_logits,
    _hf_log_probs,
    needs_transformers,
    tokenizer_tables,
    train_tokenizer,
)

from epjax import llama, pretrained, transformer  # noqa: E402

Q = gguf.GGMLQuantizationType
TEXTS = [
    "The cat sat on the mat. It was happy!",
    "In 2024, 12345 people visited Paris?",
    "She opened the door... Then she smiled.",
]
# Varied strings for tokenizer parity: digits, punctuation, Unicode (accents, CJK, emoji, combining marks),
# leading, repeated and trailing spaces, tabs, newlines, contractions and case.
STRINGS = [
    *CORPUS,
    "Hello",
    " leading space",
    "two  spaces and   three",
    "trailing space ",
    "tab\there\nnew line\n\nparagraph\r\nwindows",
    "3.14159 + 2,718 = 12345678; 2024-12-03",
    "It's they're we've I'M YOU'LL she'd",
    "ünïcödé — naïve café, Ελληνικά, кириллица",
    "日本語のテキスト。中文文本！",
    "emoji 🙂🎉 and e\u0301 (combining acute)",
    "CamelCaseWords and ALLCAPS and mIxEd",
    "x<|endoftext|>y",
    "path/to/file.py: a/b//c",
    "!!!??? ... ,,, ;;",
]


# --- files written by the tests -----------------------------------------------------------------------------


def kquant_blocks(qtype, rows: int, cols: int, rng) -> np.ndarray:
    """Random stored bytes of a ``[rows, cols]`` Q4_K or Q6_K tensor, with small float16 scales.

    ``gguf.quants`` cannot quantise these types. The float16 super-block scales are set so that the values are
    O(0.1) (the quants and 6- or 8-bit sub-block scales stay random): ``d`` and ``dmin`` at bytes 0 and 2 of a
    144-byte Q4_K block, ``d`` at byte 208 of a 210-byte Q6_K block.
    """
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, nbytes), dtype=np.uint8)
    offsets, low, high = {Q.Q4_K: ((0, 2), 1e-4, 3e-4), Q.Q6_K: ((208,), 3e-5, 1e-4)}[qtype]
    for offset in offsets:
        scale = rng.uniform(low, high, raw.shape[:2]).astype("<f2")
        raw[..., offset : offset + 2] = scale[..., None].view(np.uint8)
    return raw.reshape(rows, -1)


def _add(writer, name: str, array: np.ndarray, qtype, rng) -> None:
    if qtype == Q.F32:
        writer.add_tensor(name, array)
    elif qtype in (Q.Q4_K, Q.Q6_K):
        writer.add_tensor(name, kquant_blocks(qtype, *array.shape, rng), raw_dtype=qtype)
    else:
        writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def write_model_gguf(
    path: Path,
    tok,
    arch: str,
    *,
    quant=Q.F32,
    kquant=None,
    seed: int = 0,
    embed: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    head_size: int | None = None,
    mlp: int = 256,
    layers: int = 2,
    context: int = 64,
    tied: bool = False,
    pre: str = "qwen2",
    metadata: dict | None = None,
    extra: dict | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """A tiny random ``arch`` GGUF (qwen2, qwen3 or gpt2) with ``tok``'s byte-level BPE.

    Matrices are stored as ``quant``; those whose rows are a whole number of 256-value blocks as ``kquant`` when
    given; vectors (norms, biases) in F32. Written the way llama.cpp's converter writes these architectures:
    nothing permuted, GPT-2's kernels ``[out, in]``.
    """
    rng = np.random.default_rng(seed)
    tokens, merges = tokenizer_tables(tok)
    V = len(tokens)
    K = head_size or embed // heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.block_count", layers)
    w.add_uint32(f"{arch}.context_length", context)
    w.add_uint32(f"{arch}.embedding_length", embed)
    w.add_uint32(f"{arch}.feed_forward_length", mlp)
    w.add_uint32(f"{arch}.attention.head_count", heads)
    if arch == "gpt2":
        w.add_float32("gpt2.attention.layer_norm_epsilon", 1e-5)
    else:
        w.add_uint32(f"{arch}.attention.head_count_kv", kv_heads)
        w.add_float32(f"{arch}.rope.freq_base", 1000.0)
        w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
        if head_size is not None:
            w.add_uint32(f"{arch}.attention.key_length", K)
            w.add_uint32(f"{arch}.attention.value_length", K)
    for key, value in (metadata or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)

    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (V, embed), "output_norm.weight": (embed,)}
    if arch == "gpt2":
        shapes.update({"position_embd.weight": (context, embed), "output_norm.bias": (embed,)})
    if not tied:
        shapes["output.weight"] = (V, embed)
    for i in range(layers):
        b = f"blk.{i}."
        if arch == "gpt2":
            shapes.update(
                {
                    b + "attn_norm.weight": (embed,),
                    b + "attn_norm.bias": (embed,),
                    b + "attn_qkv.weight": (3 * embed, embed),
                    b + "attn_qkv.bias": (3 * embed,),
                    b + "attn_output.weight": (embed, embed),
                    b + "attn_output.bias": (embed,),
                    b + "ffn_norm.weight": (embed,),
                    b + "ffn_norm.bias": (embed,),
                    b + "ffn_up.weight": (mlp, embed),
                    b + "ffn_up.bias": (mlp,),
                    b + "ffn_down.weight": (embed, mlp),
                    b + "ffn_down.bias": (embed,),
                }
            )
            continue
        shapes.update(
            {
                b + "attn_norm.weight": (embed,),
                b + "attn_q.weight": (heads * K, embed),
                b + "attn_k.weight": (kv_heads * K, embed),
                b + "attn_v.weight": (kv_heads * K, embed),
                b + "attn_output.weight": (embed, heads * K),
                b + "ffn_norm.weight": (embed,),
                b + "ffn_gate.weight": (mlp, embed),
                b + "ffn_up.weight": (mlp, embed),
                b + "ffn_down.weight": (embed, mlp),
            }
        )
        if arch == "qwen2":
            shapes.update({b + "attn_q.bias": (heads * K,)})
            shapes.update({b + "attn_k.bias": (kv_heads * K,), b + "attn_v.bias": (kv_heads * K,)})
        if arch == "qwen3":
            shapes.update({b + "attn_q_norm.weight": (K,), b + "attn_k_norm.weight": (K,)})
    shapes.update(extra or {})
    for name in drop:
        del shapes[name]
    for name, shape in shapes.items():
        if len(shape) == 1:
            gain = name.endswith("norm.weight")
            array = ((1.0 if gain else 0.0) + 0.2 * rng.standard_normal(shape)).astype(np.float32)
            qtype = Q.F32
        else:
            # Every matrix, the embeddings too, N(0, 1.5^2 / in): logits O(1) also when the head is the tied
            # embedding (a unit-variance embedding would give logits of O(10), log-probs near -40, whose float32
            # rounding alone is 1e-5).
            array = (1.5 / np.sqrt(shape[1]) * rng.standard_normal(shape)).astype(np.float32)
            qtype = kquant if kquant is not None and shape[1] % 256 == 0 else quant
        _add(w, name, array, qtype, rng)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _hf_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def _hf_tokenizer(path: Path):
    from transformers import AutoTokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer()


# --- the models against transformers ------------------------------------------------------------------------

CASES = {  # name -> (architecture, writer keywords)
    "qwen2": ("qwen2", {}),
    "qwen2-tied": ("qwen2", {"tied": True, "seed": 1}),
    "qwen3": ("qwen3", {"head_size": 128, "heads": 4, "kv_heads": 2}),
    # transformers reads gpt2.context_length as n_ctx and keeps n_positions = 1024: the file must have 1024.
    "gpt2": ("gpt2", {"pre": "gpt-2", "heads": 4, "context": 1024}),
}
QUANTS = {"F32": (Q.F32, None), "Q8_0+Q4_K": (Q.Q8_0, Q.Q4_K), "F32+Q6_K": (Q.F32, Q.Q6_K)}
MODEL_CASES = [  # F32 everywhere; Q8_0 with Q4_K for each architecture; Q6_K once
    *((case, "F32") for case in CASES),
    *((case, "Q8_0+Q4_K") for case in ("qwen2", "qwen3", "gpt2")),
    ("qwen3", "F32+Q6_K"),
]


@needs_transformers
@pytest.mark.parametrize(("case", "quant"), MODEL_CASES)
def test_model_matches_transformers(tmp_path, bpe, case, quant):
    """Per-token log-probs and logits (BOS prepended) against transformers loading the same file, float32."""
    arch, kwargs = CASES[case]
    qtype, kquant = QUANTS[quant]
    path = write_model_gguf(tmp_path / f"{case}.gguf", bpe, arch, quant=qtype, kquant=kquant, **kwargs)
    file = pretrained.read_gguf(path)
    if kquant is not None:  # the K-quant fixture: K-quant tensors present, their values finite and O(0.1)
        stored = [n for n, t in file.tensors.items() if t.type_id == int(kquant)]
        assert stored
        for name in stored:
            values = gguf.quants.dequantize(file.raw(name).reshape(file.tensors[name].shape[0], -1), kquant)
            assert np.isfinite(values).all() and 0.01 < np.abs(values).max() < 1.0
    model, params, tok = pretrained.load_gguf(path)
    family = transformer.Model if arch == "gpt2" else llama.Model
    assert isinstance(model, family) and tok.bos_id == 0 and model.max_length == (1023 if arch == "gpt2" else 64)
    if arch != "gpt2":
        c = model.config
        assert (c.attention_bias, c.qk_norm) == (arch == "qwen2", arch == "qwen3")
        assert c.head_size == kwargs.get("head_size", 16) and c.tie_embeddings is kwargs.get("tied", False)
    hf = _hf_model(path)
    score, logits = jax.jit(model.log_probs), jax.jit(model.logits)
    worst = 0.0
    for text in TEXTS:
        ids = tok.encode(text)[:12]  # one length, one compilation
        assert len(ids) == 12
        want_logits, want = _hf_log_probs(hf, tok.bos_id, ids)
        got = np.asarray(score(params, jnp.array(ids)))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        # Logits: transformers' own float32 error is up to 2.2e-5 here (measured against epjax in float64: its
        # GGUF kernels compute in float32 even when asked for float64), ours up to 7e-6; see the module docstring.
        np.testing.assert_allclose(logits(params, jnp.array(ids)), want_logits, atol=3e-5, rtol=0)
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"{case} {quant}: max |log p - transformers| = {worst:.2e}")


@needs_transformers
def test_gpt2_untied_head_and_shorter_context(tmp_path, bpe):
    """A GPT-2 head that is not a copy of the embedding stays untied; a shorter context slices the positions."""
    path = write_model_gguf(tmp_path / "gpt2_untied.gguf", bpe, "gpt2", pre="gpt-2", seed=5, context=1024)
    file = pretrained.read_gguf(path)
    model, params = pretrained.from_gguf(file, context_length=20)
    assert not model.config.tie_embeddings and model.max_length == 20
    assert params["position_embed"][...].shape == (21, 64)
    np.testing.assert_array_equal(params["head"]["kernel"][...], file.tensor("output.weight").T)
    np.testing.assert_array_equal(params["bos"][...], file.tensor("token_embd.weight")[0])
    hf = _hf_model(path)
    _, _, tok = pretrained.load_gguf(path)
    ids = tok.encode(TEXTS[0])[:12]
    _, want = _hf_log_probs(hf, 0, ids)
    np.testing.assert_allclose(model.log_probs(params, jnp.array(ids)), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["qwen2", "qwen3", "gpt2"])
def test_kv_cache_equals_parallel_float64(tmp_path, bpe, case):
    """The cached decoder (sampling) and the parallel pass (scoring) agree on GGUF-loaded biases, q/k norms and
    GPT-2 parameters, in float64."""
    arch, kwargs = CASES[case]
    path = write_model_gguf(tmp_path / f"{case}.gguf", bpe, arch, quant=Q.Q8_0, **kwargs)
    with jax.enable_x64(True):
        model, params, tok = pretrained.load_gguf(path, dtype="float64", context_length=10)
        x = jnp.array(tok.encode(CORPUS[1])[:10])
        parallel = jax.jit(model.logits)(params, x)
        assert parallel.dtype == jnp.float64
        np.testing.assert_allclose(_decode_logits(model, params, x), parallel, rtol=0, atol=1e-10)


def test_gpt2_copied_head_is_tied(tmp_path, bpe):
    """llama.cpp writes GPT-2's tied head as a copy of token_embd: read as tied, one matrix."""
    tokens, _ = tokenizer_tables(bpe)
    path = write_model_gguf(tmp_path / "gpt2_tied.gguf", bpe, "gpt2", pre="gpt-2", tied=True)
    file = pretrained.read_gguf(path)
    assert pretrained.config_from_gguf(file).tie_embeddings
    # The same file with output.weight = token_embd.weight (bytes and type): still tied, same log-probs.
    copy = tmp_path / "gpt2_copy.gguf"
    reader = gguf.GGUFReader(path)
    w = gguf.GGUFWriter(str(copy), "gpt2")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(field.name, value, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(field.name, value, vtype)
    for t in reader.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    w.add_tensor("output.weight", np.asarray(embd.data), raw_dtype=embd.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    copied = pretrained.read_gguf(copy)
    assert "output.weight" in copied.tensors and pretrained.config_from_gguf(copied).tie_embeddings
    (m1, p1), (m2, p2) = pretrained.from_gguf(file), pretrained.from_gguf(copied)
    x = jnp.array([5, 9, 2, 7])
    np.testing.assert_array_equal(m1.log_probs(p1, x), m2.log_probs(p2, x))
    assert len(tokens) == m1.vocab_size


# --- refusals -------------------------------------------------------------------------------------------------


def test_unknown_architecture_and_bad_files_are_refused(tmp_path, bpe):
    reader = gguf.GGUFReader(write_model_gguf(tmp_path / "q.gguf", bpe, "qwen2"))
    other = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(other), "falcon")
    w.add_uint32("falcon.block_count", 2)
    w.add_token_list(reader.fields["tokenizer.ggml.tokens"].contents())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"other\.gguf: general\.architecture = 'falcon' is not supported; "
                       r"supported: \['llama', 'qwen2', 'qwen3', 'gpt2'\]"):
        pretrained.load_gguf(other)
    # A qwen2 file without its biases; a qwen2 file with Qwen3's q/k norms.
    no_bias = write_model_gguf(tmp_path / "no_bias.gguf", bpe, "qwen2", drop=("blk.1.attn_k.bias",))
    with pytest.raises(ValueError, match=r"no_bias\.gguf: the GGUF file has no tensor 'blk\.1\.attn_k\.bias'"):
        pretrained.load_gguf(no_bias)
    normed = write_model_gguf(tmp_path / "normed.gguf", bpe, "qwen2", extra={"blk.0.attn_q_norm.weight": (16,)})
    with pytest.raises(ValueError, match=r"normed\.gguf: unexpected tensors for a 'qwen2' model: "
                       r"\['blk\.0\.attn_q_norm\.weight'\]"):
        pretrained.load_gguf(normed)
    # GPT-2 with another LayerNorm eps, or an MLP width that is not a multiple of the model width.
    gpt = pretrained.read_gguf(write_model_gguf(tmp_path / "g.gguf", bpe, "gpt2", pre="gpt-2"))
    gpt.metadata["gpt2.attention.layer_norm_epsilon"] = 1e-6
    with pytest.raises(ValueError, match=r"g\.gguf: gpt2\.attention\.layer_norm_epsilon = 1e-06 is not supported"):
        pretrained.config_from_gguf(gpt)
    gpt.metadata["gpt2.attention.layer_norm_epsilon"] = 1e-5
    gpt.metadata["gpt2.feed_forward_length"] = 100
    with pytest.raises(ValueError, match=r"length = 100 must be a multiple of gpt2\.embedding_length = 64"):
        pretrained.config_from_gguf(gpt)
    gpt.metadata["gpt2.feed_forward_length"] = 256
    with pytest.raises(ValueError, match=r"`context_length` must be an integer in \[1, 63\] \(the file's "
                       r"gpt2\.context_length - 1 for BOS\), got 64"):
        pretrained.config_from_gguf(gpt, context_length=64)
    with pytest.raises(ValueError, match=r"`bos_id` must be a token id in \[0, 300\), got 300"):
        pretrained.config_from_gguf(gpt, bos_id=300)


# --- tokenizers ---------------------------------------------------------------------------------------------

BYTE_LEVEL_PRE = ["qwen2", "deepseek-r1-qwen", "qwen35", "tekken", "gpt-4o", "llama-v3", "gpt-2"]


@pytest.fixture(scope="module")
def digit_bpe():
    """A byte-level BPE trained on text with many numbers and capitals, so that pre-tokenizers give different ids."""
    extra = ["12345678 2024 3.14159 2718 100 999", "CamelCaseWords ALLCAPS They're it's", "path/to/file /c"]
    return train_bpe(CORPUS + extra, 400)


def write_tokenizer_gguf(path: Path, tok, pre: str) -> Path:
    tokens, merges = tokenizer_tables(tok)
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_bos_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@needs_transformers
@pytest.mark.parametrize("pre", BYTE_LEVEL_PRE)
def test_byte_level_pre_tokenizers_match_transformers(tmp_path, digit_bpe, pre):
    path = write_tokenizer_gguf(tmp_path / "tok.gguf", digit_bpe, pre)
    meta = pretrained.read_gguf(path).metadata
    tok = pretrained.Tokenizer.from_gguf(meta, bos_id=0, source=path)
    hf = _hf_tokenizer(path)
    for text in STRINGS:
        ids = tok.encode(text)
        assert ids == hf.encode(text, add_special_tokens=False), (pre, text)
        assert tok.decode(ids) == text
        assert b"".join(p for p in (tok.token_bytes(i) for i in ids) if p is not None) == text.replace(
            "<|endoftext|>", ""
        ).encode()
    # The pre-tokenizer matters: these strings split differently under GPT-2's regex.
    gpt2 = pretrained.Tokenizer.from_gguf(dict(meta, **{"tokenizer.ggml.pre": "gpt2"}), bos_id=0)
    differs = [t for t in STRINGS if tok.encode(t) != gpt2.encode(t)]
    assert (differs == []) == (pre == "gpt-2"), differs


def test_qwen2_splits_digits_one_by_one(tmp_path, digit_bpe):
    path = write_tokenizer_gguf(tmp_path / "tok.gguf", digit_bpe, "qwen2")
    tok = pretrained.Tokenizer.from_gguf(pretrained.read_gguf(path).metadata, bos_id=0)
    pieces = [tok.token_bytes(i) for i in tok.encode("In 2024, 12345 people")]
    assert [p for p in pieces if p.strip().isdigit()] == [b"2", b"0", b"2", b"4", b"1", b"2", b"3", b"4", b"5"]


def test_unknown_pre_tokenizer_and_model_are_refused(tmp_path, digit_bpe):
    meta = pretrained.read_gguf(write_tokenizer_gguf(tmp_path / "tok.gguf", digit_bpe, "qwen2")).metadata
    for name in ("falcon", "starcoder", "chatglm-bpe", "qwen"):
        with pytest.raises(ValueError, match=rf"src: tokenizer\.ggml\.pre = '{name}' is not supported; supported: "
                           r"\['default', 'gpt2', 'gpt-2', 'smollm'"):
            pretrained.Tokenizer.from_gguf(dict(meta, **{"tokenizer.ggml.pre": name}), bos_id=0, source="src")
    with pytest.raises(ValueError, match=r"src: tokenizer\.ggml\.model = 't5' is not supported; epjax reads "
                       r"byte-level BPE \('gpt2'\) and SentencePiece \('llama'\)"):
        pretrained.Tokenizer.from_gguf(dict(meta, **{"tokenizer.ggml.model": "t5"}), bos_id=0, source="src")
    spm = dict(meta, **{"tokenizer.ggml.model": "llama", "general.architecture": "gemma2"})
    with pytest.raises(ValueError, match=r"src: a SentencePiece tokenizer of architecture 'gemma2' is not supported"):
        pretrained.Tokenizer.from_gguf(spm, bos_id=0, source="src")
    spm = {k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"}
    spm["tokenizer.ggml.model"] = "llama"
    with pytest.raises(ValueError, match=r"src: a SentencePiece tokenizer needs 'tokenizer\.ggml\.scores'"):
        pretrained.Tokenizer.from_gguf(spm, bos_id=0, source="src")
    spm["tokenizer.ggml.scores"] = [0.0] * 3
    with pytest.raises(ValueError, match=r"src: tokenizer\.ggml\.scores has 3 entries for \d+ tokens"):
        pretrained.Tokenizer.from_gguf(spm, bos_id=0, source="src")


# --- SentencePiece ---------------------------------------------------------------------------------------------

SPACE = "\u2581"


def sentencepiece_tables(vocab_size: int = 600) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary as llama.cpp writes Llama's: ``<unk>``, ``<s>``, ``</s>``, the 256 byte
    tokens ``<0x00>``..``<0xFF>``, then BPE pieces spelled with ``▁``, scored minus their merge rank (single
    characters last, lowest), as SentencePiece's BPE models are.
    """
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)  # English only: other characters fall back to bytes
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    merged = ["".join(m.split(" ")) for m in merges]
    singles = sorted((t for t in model["vocab"] if len(t) == 1), key=model["vocab"].get)
    pieces, seen = [], set()
    for p in merged:
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces, *singles]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [-1e9 - i for i in range(len(singles))]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) + len(singles))
    return tokens, scores, types


def write_spm_gguf(path: Path, *, prefix: bool | None = None, arch: str = "llama") -> Path:
    tokens, scores, types = sentencepiece_tables()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    if prefix is not None:
        w.add_add_space_prefix(prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    return write_spm_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf")


@needs_transformers
def test_sentencepiece_matches_transformers(spm_gguf):
    """Ids equal transformers' GGUF tokenizer, except where its Metaspace("first") drops SentencePiece's prefix."""
    meta = pretrained.read_gguf(spm_gguf).metadata
    tok = pretrained.Tokenizer.from_gguf(meta, bos_id=1, source=spm_gguf)
    hf = _hf_tokenizer(spm_gguf)
    assert tok.vocab_size == len(meta["tokenizer.ggml.tokens"]) == len(hf)
    used_bytes = set()
    for text in [*STRINGS, "\u00a0non-breaking\u00a0space", "\nnew line first"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        used_bytes |= {i for i in ids if 3 <= i < 259}
        if text.startswith(" "):
            # transformers adds no "▁" before a text starting with a space (so its decode loses the space);
            # SentencePiece does: ours is transformers' tokenization of the text with one more space.
            assert ids != hf.encode(text, add_special_tokens=False)
            assert ids == hf.encode(" " + text, add_special_tokens=False), text
        else:
            assert ids == hf.encode(text, add_special_tokens=False), text
            assert hf.decode(ids) == text
    assert len(used_bytes) > 10  # byte fallback exercised (CJK, emoji, newlines are not in the vocabulary)
    # A literal "▁" is a space to SentencePiece (and to transformers): it decodes as one.
    ids = tok.encode("a\u2581literal")
    assert ids == hf.encode("a\u2581literal", add_special_tokens=False) and tok.decode(ids) == "a literal"
    # Special tokens stay whole; SentencePiece's prefix is put before each text piece after one.
    ids = tok.encode("The</s>cat")
    assert [tok.backend.id_to_token(i) for i in ids] == [SPACE + "The", "</s>", SPACE + "cat"]
    assert tok.decode(ids) == "The</s> cat"


def test_sentencepiece_pieces_and_sentence_ends(spm_gguf):
    tok = pretrained.Tokenizer.from_gguf(pretrained.read_gguf(spm_gguf).metadata, bos_id=1)
    assert tok.token_bytes(1) is None and tok.token_bytes(2) is None  # <s>, </s>: control tokens, not text
    assert tok.token_bytes(3 + 0x0A) == b"\n" and tok.token_bytes(3 + 0xE6) == b"\xe6"
    assert tok.token_bytes(tok.backend.token_to_id(SPACE + "The")) == b" The"
    for text in [STRINGS[4], "日本語のテキスト。中文文本！Yes. 🙂 Done!\nNext line? ok.", "A.\n\nB! c"]:
        ids = tok.encode(text)
        joined = b"".join(tok.token_bytes(i) for i in ids)
        assert joined == b" " + text.encode()  # SentencePiece's prefix space (the decoder strips it), the text
        ends = tok.sentence_ends(ids)
        want = pretrained.tokenizer.reader_sentence_ends([tok.token_bytes(i) for i in ids])
        np.testing.assert_array_equal(ends, want)
        # Each end is the token holding the last byte of a terminator the reader rule accepts.
        ends_at = np.cumsum([len(tok.token_bytes(i)) for i in ids])[ends] - 1
        closing = [joined[: e + 1].decode("utf-8", "ignore")[-1] for e in ends_at]
        assert set(closing) <= set(".!?。！"), closing
    ids = tok.encode("Yes. 日本語。Done! Next? ok")
    assert tok.sentence_ends(ids).sum() == 4
    mask = tok.sentence_end_mask()
    assert mask[tok.backend.token_to_id(".")] and not mask[1]


@needs_transformers
@pytest.mark.parametrize("prefix", [True, False])
def test_sentencepiece_space_prefix_flag(tmp_path, prefix):
    """add_space_prefix = true is the default (as llama.cpp); false puts no ▁ before the text."""
    path = write_spm_gguf(tmp_path / "spm.gguf", prefix=prefix)
    tok = pretrained.Tokenizer.from_gguf(pretrained.read_gguf(path).metadata, bos_id=1)
    first = tok.backend.id_to_token(tok.encode("The cat")[0])
    assert first.startswith(SPACE) is prefix
    for text in STRINGS[:8]:
        assert tok.decode(tok.encode(text)) == text
    if prefix:
        assert tok.encode("The cat") == _hf_tokenizer(path).encode("The cat", add_special_tokens=False)


def test_merges_from_scores_follow_scores():
    tokens = ["a", "b", "c", "ab", "bc", "abc"]
    scores = np.array([-10.0, -10.0, -10.0, -1.0, -2.0, -3.0])
    vocab = {t: i for i, t in enumerate(tokens)}
    got = pretrained.tokenizer._merges_from_scores(tokens, scores, vocab)
    assert got == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


@needs_transformers
def test_merges_from_scores_equal_transformers():
    from transformers.tokenization_utils_base import generate_merges

    tokens, scores, _ = sentencepiece_tables()
    vocab = {t: i for i, t in enumerate(tokens)}
    got = pretrained.tokenizer._merges_from_scores(tokens, np.asarray(scores), vocab)
    assert len(got) > 150 and got == generate_merges(vocab, dict(zip(tokens, scores, strict=True)))
