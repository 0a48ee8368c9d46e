"""epjax.pretrained.load_hf: Hugging Face checkpoint folders of Llama, Mistral, Qwen2, Qwen3 (and GPT-2).

Oracle: transformers' own ``*ForCausalLM`` loaded from the very folder epjax reads. Each folder is a tiny random
model built with transformers (``torch.manual_seed``, every parameter moved off its init so that norms, biases
and gains matter), saved with ``save_pretrained`` (safetensors), beside a byte-level BPE ``tokenizer.json``
trained here. Nothing is downloaded (``HF_HUB_OFFLINE=1``).

Tolerances. float32: 1e-5 on log-probabilities and logits (activations O(1), two layers; the measured
differences are ~1e-6). float64: 1e-10, with transformers' float32 islands (RMSNorm, the attention softmax, the
RoPE cosines) run in float64 and its RoPE fed epjax's tables (as tests/test_pretrained.py's SmolLM2 check
explains: the tables come from a float32 ``pow`` whose last bit differs between libraries; the tables met
transformers' own RoPE in the float32 comparison). What is left is round-off, ~1e-15.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import train_bpe  # noqa: E402

from epjax import llama, pretrained, transformer  # noqa: E402
from epjax.pretrained import hf as hf_lib  # noqa: E402

CORPUS = [
    "The cat sat on the mat. It was happy! Was it? Yes.",
    "Water boils at 100 degrees. Then it turns into steam, which rises and cools.",
    "In 2024, 12345 people visited Paris; many of them saw the tower.",
    "She opened the door, looked outside and smiled... The rain had stopped!",
]
LENGTH = 16  # one sequence length: one compilation per model
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
CLASSES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3"}
SIZES = dict(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
# name -> (model_type, config overrides, tokenizer_config.json or None, expected BOS token)
CASES = {
    "llama": ("llama", dict(tie_word_embeddings=False, rope_theta=5000.0, rms_norm_eps=1e-5), "adds <s>", "<s>"),
    "llama_tied": ("llama", dict(tie_word_embeddings=True, num_key_value_heads=4), "template <s>", "<s>"),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True, rope_theta=1e6), "qwen", "<|endoftext|>"),
    "qwen3": ("qwen3", dict(tie_word_embeddings=False, head_dim=16), "qwen", "<|endoftext|>"),
    "mistral": ("mistral", dict(tie_word_embeddings=False, sliding_window=4096), "adds <s>", "<s>"),
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, special_tokens=("<|endoftext|>", "<s>"))


def write_tokenizer(folder: Path, bpe, style: str) -> None:
    """tokenizer.json, and a tokenizer_config.json in one of the BOS styles of real checkpoints."""
    tok = tokenizers.Tokenizer.from_str(bpe.to_str())
    config: dict = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if style == "adds <s>":  # Llama 2, Mistral
        config.update(bos_token="<s>", add_bos_token=True)
    elif style == "template <s>":  # Llama 3: no add_bos_token, the post-processor puts BOS first
        config.update(bos_token="<s>")
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    elif style == "no add":  # a declared BOS the tokenizer does not add (SmolLM2): <|endoftext|> instead
        config.update(bos_token="<s>", add_bos_token=False)
    elif style == "qwen":  # no BOS at all; Qwen's own pre-tokenizer (one digit per piece), as its tokenizer.json
        config.update(bos_token=None, eos_token="<|endoftext|>")
        tok.normalizer = tokenizers.normalizers.NFC()
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
            [
                tokenizers.pre_tokenizers.Split(tokenizers.Regex(QWEN_SPLIT), behavior="isolated"),
                tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def write_checkpoint(folder: Path, bpe, case: str, seed: int = 0, **save) -> Path:
    """A tiny random transformers model of ``CASES[case]`` saved to ``folder``, with the tokenizer files."""
    model_type, overrides, style, _ = CASES[case]
    module = importlib.import_module(f"transformers.models.{model_type}")
    config = getattr(module, f"{CLASSES[model_type]}Config")(vocab_size=bpe.get_vocab_size(), **{**SIZES, **overrides})
    torch.manual_seed(seed)
    model = getattr(module, f"{CLASSES[model_type]}ForCausalLM")(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), **save)
    write_tokenizer(folder, bpe, style)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, bpe):
    root = tmp_path_factory.mktemp("hf")
    return {case: write_checkpoint(root / case, bpe, case, seed=i) for i, case in enumerate(CASES)}


def _ids(tok) -> list[list[int]]:
    return [tok.encode(text)[:LENGTH] for text in CORPUS[:3]]


def _hf_model(folder: Path, dtype=None, **kw):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32, **kw).eval()


def _hf_scores(hf, bos_id: int, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """transformers' (logits [T, V], log p(x_t | BOS, x_<t) [T]) for x = ids, BOS prepended."""
    with torch.no_grad():
        logits = hf(torch.tensor([[bos_id, *ids[:-1]]])).logits[0].double()
    log_p = torch.log_softmax(logits, -1)[torch.arange(len(ids)), torch.tensor(ids)]
    return logits.numpy(), log_p.numpy()


def _max_diff(model, params, hf, ids, bos_id=None, logits=False) -> float:
    """Max |log p - log p_hf| over the sequences, asserted below 1e-5 (and the logits too if ``logits``)."""
    score, logits_of = jax.jit(model.log_probs), jax.jit(model.logits)
    worst = 0.0
    for seq in ids:
        want_logits, want = _hf_scores(hf, model.bos_id if bos_id is None else bos_id, seq)
        got = np.asarray(score(params, jnp.array(seq)))
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        if logits:
            np.testing.assert_allclose(logits_of(params, jnp.array(seq)), want_logits, atol=1e-5, rtol=0)
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


# --- parity with transformers -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers_float32(folders, bpe, case):
    """Config, tokenizer, BOS and per-token log-probs (and logits) against transformers, float32."""
    model_type, overrides, _, bos_token = CASES[case]
    folder = folders[case]
    model, params, tok = hf_lib.load_hf(folder)
    c = model.config
    assert isinstance(model, llama.Model) and model.max_length == 64 and c.num_layers == 2
    assert c.tie_embeddings is overrides["tie_word_embeddings"] and ("head" in params) is not c.tie_embeddings
    assert c.num_kv_heads == overrides.get("num_key_value_heads", 2) and c.num_heads == 4
    assert c.head_size == overrides.get("head_dim", 8)
    assert c.rope_base == overrides.get("rope_theta", 10000.0) and c.rms_eps == overrides.get("rms_norm_eps", 1e-6)
    assert c.attention_bias is (model_type == "qwen2") and c.qk_norm is (model_type == "qwen3")
    assert tok.bos_id == model.bos_id == bpe.token_to_id(bos_token)
    from transformers import AutoTokenizer

    declared = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    hf_tok = AutoTokenizer.from_pretrained(str(folder))  # what a transformers user loads from the folder
    for text in CORPUS:  # the folder's tokenizer.json, its own pre-tokenizer, no special token added
        assert tok.encode(text) == declared.encode(text, add_special_tokens=False).ids
        assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)
        assert tok.decode(tok.encode(text)) == text
    assert (tok.encode("in 2024") == bpe.encode("in 2024").ids) is not model_type.startswith("qwen")
    hf = _hf_model(folder)
    diff = _max_diff(model, params, hf, _ids(tok), logits=True)
    print(f"{case}: float32 max |log p - log p_hf| = {diff:.2e}")


def _rope_patches(mp, model_type: str, config: llama.Config) -> None:
    """Run transformers' float32 islands in float64, its RoPE from epjax's tables (module docstring)."""
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    cos_table, sin_table = (torch.from_numpy(t) for t in llama._rope_table(config))

    def rotary64(self, x, position_ids):
        cos, sin = cos_table[position_ids], sin_table[position_ids]
        return (cos * self.attention_scaling).to(x.dtype), (sin * self.attention_scaling).to(x.dtype)

    def rms_norm64(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    softmax = torch.nn.functional.softmax

    def softmax_in_dtype(x, dim=None, dtype=None, **kwargs):
        return softmax(x, dim=dim, **kwargs)

    prefix = CLASSES[model_type]
    mp.setattr(getattr(module, f"{prefix}RotaryEmbedding"), "forward", rotary64)
    mp.setattr(getattr(module, f"{prefix}RMSNorm"), "forward", rms_norm64)
    mp.setattr(module.nn.functional, "softmax", softmax_in_dtype)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers_float64(folders, case, x64):
    model_type = CASES[case][0]
    model, params, tok = hf_lib.load_hf(folders[case], dtype="float64")
    assert params["embed"].dtype == jnp.float64 and params["blocks"]["q"].dtype == jnp.float64
    hf = _hf_model(folders[case], torch.float64, attn_implementation="eager")
    score = jax.jit(model.log_probs)
    worst = 0.0
    with pytest.MonkeyPatch.context() as mp:
        _rope_patches(mp, model_type, model.config)
        for seq in _ids(tok):
            _, want = _hf_scores(hf, model.bos_id, seq)
            got = np.asarray(score(params, jnp.array(seq)))
            np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)
            worst = max(worst, float(np.max(np.abs(got - want))))
    print(f"{case}: float64 max |log p - log p_hf| = {worst:.2e}")


def test_sharded_checkpoint_and_load_model(tmp_path, folders, bpe):
    """max_shard_size: several files and an index, read to the same parameters; load_model and model_files."""
    folder = write_checkpoint(tmp_path / "sharded", bpe, "qwen3", seed=3, max_shard_size="40KB")
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 2 and (folder / hf_lib.INDEX_FILE).is_file()
    model, params, tok = pretrained.load_model(folder)
    assert isinstance(model, llama.Model) and model.config.qk_norm
    _max_diff(model, params, _hf_model(folder), _ids(tok)[:1])
    files = {p.name for p in pretrained.model_files(folder)}
    assert files == {*shards, hf_lib.INDEX_FILE, "config.json", "tokenizer.json", "tokenizer_config.json"}
    # An index that puts a tensor in the wrong shard; a shard outside the folder; a shard that is missing
    index = json.loads((folder / hf_lib.INDEX_FILE).read_text())
    name = "model.norm.weight"
    wrong = next(f for f in shards if f != index["weight_map"][name])
    for shard, message in ((wrong, f"lists tensor '{name}' in '{wrong}', which does not hold it"),
                           ("../" + wrong, "is not a file name in the folder")):  # fmt: skip
        edited = {**index, "weight_map": {**index["weight_map"], name: shard}}
        (folder / hf_lib.INDEX_FILE).write_text(json.dumps(edited))
        with pytest.raises(ValueError, match=message):
            hf_lib.load_hf(folder)
    (folder / hf_lib.INDEX_FILE).write_text(json.dumps(index))
    (folder / shards[0]).unlink()
    with pytest.raises(ValueError, match="safetensors file not found"):
        hf_lib.load_hf(folder)


def test_context_length_and_bos_id(folders, bpe):
    model, params, tok = hf_lib.load_hf(folders["llama"], context_length=20, bos_id=7)
    assert model.max_length == 20 and model.bos_id == tok.bos_id == 7
    hf = _hf_model(folders["llama"])
    _max_diff(model, params, hf, _ids(tok)[:1])  # conditioned on token 7 on both sides
    for bad in (0, 65, True, 2.0):
        with pytest.raises(ValueError, match=r"`context_length` must be an integer in \[1, 64\]"):
            hf_lib.load_hf(folders["llama"], context_length=bad)
    for bad in (-1, bpe.get_vocab_size(), True):
        with pytest.raises(ValueError, match=r"`bos_id` must be a token id in \[0, "):
            hf_lib.load_hf(folders["llama"], bos_id=bad)
    with pytest.raises(ValueError, match="`dtype` must be 'float32' or 'float64', got 'float16'"):
        hf_lib.load_hf(folders["llama"], dtype="float16")


# --- the BOS rule ---------------------------------------------------------------------------------------------


def test_bos_choice(tmp_path, folders, bpe):
    folder = tmp_path / "bos"
    shutil.copytree(folders["llama"], folder)
    write_tokenizer(folder, bpe, "no add")  # declared, not added: <|endoftext|>
    assert hf_lib.load_hf(folder)[2].bos_id == bpe.token_to_id("<|endoftext|>")
    write_tokenizer(folder, bpe, "template <s>")  # added by the post-processor: <s>, and encode adds nothing
    _, _, tok = hf_lib.load_hf(folder)
    assert tok.bos_id == bpe.token_to_id("<s>") and tok.encode("The cat") == bpe.encode("The cat").ids
    (folder / "tokenizer_config.json").unlink()  # nothing declared: <|endoftext|>
    assert hf_lib.load_hf(folder)[2].bos_id == bpe.token_to_id("<|endoftext|>")
    no_end = train_bpe(CORPUS, special_tokens=("<s>", "<pad>"))
    no_end.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "add_bos_token": False}))
    with pytest.raises(ValueError, match="cannot choose the BOS token.*not added.*pass `bos_id`"):
        hf_lib.load_hf(folder)
    assert hf_lib.load_hf(folder, bos_id=0)[2].bos_id == 0
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>", "add_bos_token": True}))
    with pytest.raises(ValueError, match="bos_token '<bos>' .* is not in tokenizer.json's vocabulary"):
        hf_lib.load_hf(folder)


# --- refusals -------------------------------------------------------------------------------------------------


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is KeyError:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "case, changes, message",
    [
        ("llama", dict(model_type="gemma"), "model_type = 'gemma' is not supported"),
        ("llama", dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling has rope_type = 'llama3'"),
        ("llama", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "rope_parameters has rope_type"),
        ("llama", dict(mlp_bias=True), "mlp_bias = True"),
        ("llama", dict(attention_bias=True), "attention_bias = True"),
        ("qwen3", dict(attention_bias=True), "attention_bias = True"),
        ("llama", dict(hidden_act="gelu"), "hidden_act = 'gelu'"),
        ("llama", dict(hidden_size=KeyError), "no 'hidden_size'"),
        ("llama", dict(num_attention_heads=0), "num_attention_heads = 0"),
        ("mistral", dict(sliding_window=32), "sliding_window = 32 is in effect"),
        (
            "qwen2",
            dict(use_sliding_window=True, sliding_window=16, layer_types=["full_attention", "sliding_attention"]),
            "sliding_window = 16 is in effect",
        ),
        (  # no layer_types: transformers slides from layer max_window_layers on
            "qwen2",
            dict(use_sliding_window=True, sliding_window=16, layer_types=KeyError, max_window_layers=1),
            "sliding_window = 16 is in effect",
        ),
        ("qwen2", dict(layer_types=["full_attention", "linear_attention"]), "layer_types"),
        ("llama", dict(intermediate_size=40), "'model.layers.0.mlp.gate_proj.weight' has shape"),
        ("llama", dict(vocab_size=100), "more than config.json's vocab_size = 100"),
        ("llama", dict(tie_word_embeddings=True), "lm_head.weight differs"),
        ("qwen2", dict(tie_word_embeddings=False), "missing tensor 'lm_head.weight'"),
        ("qwen2", dict(tie_word_embeddings="false"), "tie_word_embeddings = 'false'; expected true or false"),
    ],
)
def test_config_refusals(tmp_path, folders, case, changes, message):
    folder = tmp_path / case
    shutil.copytree(folders[case], folder)
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=message) as err:
        hf_lib.load_hf(folder)
    assert "config.json" in str(err.value) or "safetensors" in str(err.value) or "tokenizer" in str(err.value)


def test_window_covering_the_context_is_accepted(tmp_path, folders, bpe):
    """A sliding window no shorter than the context changes nothing: accepted, and equal to transformers."""
    folder = tmp_path / "window"
    shutil.copytree(folders["mistral"], folder)
    _edit_config(folder, sliding_window=32)
    model, params, tok = hf_lib.load_hf(folder, context_length=32)
    x = [int(i) for i in np.random.default_rng(0).integers(0, bpe.get_vocab_size(), 32)]
    _max_diff(model, params, _hf_model(folder), [x])
    # One position shorter, the window bites at the last token: the refusal of context 32 > 31 is needed.
    _edit_config(folder, sliding_window=31)
    _, narrow = _hf_scores(_hf_model(folder), model.bos_id, x)
    got = np.asarray(jax.jit(model.log_probs)(params, jnp.array(x)))
    assert np.abs(got - narrow)[-1] > 1e-3 and np.abs(got - narrow)[:-1].max() < 1e-5
    with pytest.raises(ValueError, match="sliding_window = 31 is in effect and shorter than context_length = 32"):
        hf_lib.load_hf(folder, context_length=32)


def test_bfloat16_weights_and_tied_copy(tmp_path, folders, bpe):
    """BF16 safetensors widened as transformers widens them; a tied checkpoint holding a copy of the embedding."""
    from safetensors.numpy import save_file

    folder = tmp_path / "bf16"
    shutil.copytree(folders["qwen2"], folder)
    hf = _hf_model(folder).to(torch.bfloat16)
    hf.save_pretrained(str(folder))
    model, params, tok = hf_lib.load_hf(folder)
    assert model.config.tie_embeddings and params["embed"].dtype == jnp.float32
    _max_diff(model, params, _hf_model(folder), _ids(tok)[:1])  # transformers upcasts the same BF16 values
    weights = pretrained.gpt2.read_safetensors(folder / "model.safetensors")
    save_file({**weights, "lm_head.weight": weights["model.embed_tokens.weight"]}, str(folder / "model.safetensors"))
    _, again, _ = hf_lib.load_hf(folder)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), params, again))


def test_tensor_refusals(tmp_path, folders):
    from safetensors.numpy import save_file

    folder = tmp_path / "tensors"
    shutil.copytree(folders["llama"], folder)
    weights = pretrained.gpt2.read_safetensors(folder / "model.safetensors")
    missing = {k: v for k, v in weights.items() if k != "model.layers.1.mlp.up_proj.weight"}
    save_file(missing, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        hf_lib.load_hf(folder)
    buffer = {**weights, "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}  # old checkpoints
    save_file(buffer, str(folder / "model.safetensors"))
    assert hf_lib.load_hf(folder)[0].config.num_layers == 2
    extra = {**weights, "model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)}
    save_file(extra, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected tensors.*'model.layers.0.self_attn.o_proj.bias'"):
        hf_lib.load_hf(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors or model.safetensors.index.json"):
        hf_lib.load_hf(folder)
    shutil.copy(folders["llama"] / "model.safetensors", folder / "model.safetensors")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="no tokenizer.json"):
        hf_lib.load_hf(folder)
    with pytest.raises(ValueError, match="is not a directory"):
        hf_lib.load_hf(tmp_path / "nowhere")


# --- GPT-2 through the same entry point -------------------------------------------------------------------------


def test_gpt2_folder_context_length_and_bos(tmp_path, bpe):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=bpe.get_vocab_size(), n_positions=24, n_embd=32, n_layer=2, n_head=4)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path))
    bpe.save(str(tmp_path / "tokenizer.json"))
    model, params, tok = pretrained.load_model(tmp_path, context_length=12, bos_id=5)
    assert isinstance(model, transformer.Model) and model.max_length == 12 and tok.bos_id == 5
    assert params["position_embed"][...].shape == (13, 32)
    _max_diff(model, params, hf, [tok.encode(CORPUS[0])[:12]], bos_id=5)
    with pytest.raises(ValueError, match=r"`context_length` must be an integer in \[1, 23\]"):
        hf_lib.load_hf(tmp_path, context_length=24)
