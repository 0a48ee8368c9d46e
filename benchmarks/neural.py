"""Monte Carlo EP throughput of the neural families (RNN, Transformer, SSM) against the same work in PyTorch.

For every trajectory both sides do the same two things: sample ``T`` tokens ancestrally from the model,
collecting the forward log-probabilities on the way, then score the token-reversed sequence in one parallel
pass (teacher forcing), ``sigma = sum log p(x) - sum log p(reversed x)``. epjax runs the public call
``epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)``; the peer is a
plain eager PyTorch program (``torch.inference_mode``, float32) built from the *same* parameters:

- ``epjax.rnn`` (GRU, LSTM, Elman): ``nn.Embedding``-style lookup, ``torch.nn.GRU`` / ``LSTM`` / ``RNN``
  with epjax's kernels copied in, a linear read-out. Sampling calls the stacked module one step at a time;
  scoring calls it once on the whole sequence (PyTorch's CPU kernel precomputes the input projections).
- ``epjax.transformer``: a handwritten GPT (nanoGPT layout, the same weights): scoring is one causal pass
  with ``F.scaled_dot_product_attention(is_causal=True)``; sampling decodes with a key/value cache, each
  step attending to the ``position + 1`` cached slots only.
- ``epjax.ssm`` ``kind="s4d"``: sampling steps the complex diagonal recurrence; scoring is the S4D reference
  method, a causal FFT convolution with the kernel ``K_l = Re(sum_n C_n Bbar_n Abar_n^l)`` (O(T log T)).
- ``epjax.ssm`` ``kind="mamba"``: sampling steps the conv window and the selective recurrence; scoring does
  all projections and the causal depthwise conv for the whole sequence at once, then a sequential loop over
  time for the selective recurrence (as ``selective_scan_ref`` in ``mamba_ssm``, but forming
  ``exp(Delta_t A)`` step by step: materialising it for the whole batch would take B T E N floats).

Before timing, every peer is checked against epjax in float64 (same parameters, per-step log-probabilities
of epjax samples, and the peer's own sampler's forward log-probabilities re-scored by epjax) and the
benchmark-size float32 models are compared too. Then:

(a) Monte Carlo EP throughput, epjax public call vs the PyTorch program with its default thread count and
    with ``torch.set_num_threads(1)``, plus the sampling and scoring parts timed on their own;
(b) scoring cost against T (``log_probs`` of the reversed sequences under ``jax.vmap``, jitted; the peer's
    scoring at 1 thread beside it), with the exponent of ``time ~ T^k`` fitted by least squares on log-log:
    ~1 for the recursive families, rising towards 2 for the Transformer once attention outweighs the
    per-token matrix products.

Threads: XLA's CPU client runs on its own intra-op thread pool (all cores) and cannot be resized once jax is
imported; ``--jax-threads 1`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` before the import, so
that a whole run is single-threaded on the JAX side. PyTorch is timed in the same run at its default
``torch.get_num_threads()`` and at ``torch.set_num_threads(1)``. The section header records which.

    python benchmarks/neural.py            # full run, appends to RESULTS.md
    python benchmarks/neural.py --quick    # smoke run with tiny sizes, prints only (add --out FILE to append)
    python benchmarks/neural.py --repeats 1 --torch-default-repeats 1   # the shortest full run (busy machine)
"""

from __future__ import annotations

import os
import sys

if "--jax-threads=1" in sys.argv or " ".join(sys.argv).find("--jax-threads 1") >= 0:
    # XLA reads its flags once, when the CPU client starts: this must happen before jax is imported.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import epjax  # noqa: E402
from epjax import rnn, ssm, transformer  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError as err:  # the peer is a benchmark-only dependency (torch is in the [test] extra)
    raise SystemExit(f"benchmarks/neural.py needs torch (pip install torch): {err}") from err

RESULTS = Path(__file__).with_name("RESULTS.md")
PREFACE = """\
# Benchmark results

Figures measured by the scripts in this folder (`python benchmarks/<name>.py`; see README.md). Every
section records the date, the device (CPU model, core count, `jax.devices()`), the library versions and the
exact command, and gives medians over repeats after a warm-up (compile) call, with the fastest repeat in
parentheses; a ratio to a peer is always measured in the same run on the same machine, the peers timed in
alternation. Figures from different sections or devices are not comparable with each other. Newest sections
are appended at the end.
"""
TORCH_DEFAULT_THREADS = torch.get_num_threads()


# ---------------------------------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    vocab: int
    width: int
    layers: int
    heads: int  # Transformer heads
    d_state: int  # SSM state per channel
    T: int  # trajectory length of the Monte Carlo runs
    batch: int  # trajectories per Monte Carlo call (= batch_size: one compiled batch)
    scaling_T: tuple[int, ...]  # lengths of the scoring-cost sweep
    scaling_batch: int
    budget_s: float  # seconds per timed group, summed over its jobs (rounds continue until reached)
    families: tuple[str, ...]


FULL = Sizes(256, 256, 2, 4, 16, 256, 256, (64, 128, 256, 512, 1024), 16, 20.0,
             ("gru", "lstm", "elman", "transformer", "s4d", "mamba"))  # fmt: skip
QUICK = Sizes(16, 32, 2, 2, 4, 32, 16, (16, 32, 64, 128), 4, 0.5,
              ("gru", "lstm", "elman", "transformer", "s4d", "mamba"))  # fmt: skip


def make_model(family: str, s: Sizes, context: int, dtype: str = "float32"):
    """The epjax model of ``family`` at sizes ``s`` (``context``: the Transformer's context length)."""
    if family in rnn.CELLS:
        return rnn.Model(rnn.Config(s.vocab, s.width, num_layers=s.layers, cell=family, dtype=dtype))
    if family == "transformer":
        return transformer.Model(
            transformer.Config(s.vocab, context, s.layers, s.heads, s.width, dtype=dtype)
        )
    return ssm.Model(
        ssm.Config(s.vocab, kind=family, d_model=s.width, num_layers=s.layers, d_state=s.d_state, dtype=dtype)
    )


def describe_model(family: str, model) -> str:
    c = model.config
    if family in rnn.CELLS:
        return f"{family.upper() if family != 'elman' else 'Elman'} L={c.num_layers} H={c.hidden_size}"
    if family == "transformer":
        return f"GPT L={c.num_layers} D={c.embed_size} heads={c.num_heads} MLP {c.mlp_ratio}D"
    if family == "s4d":
        return f"S4D L={c.num_layers} D={c.d_model} N={c.d_state} (complex)"
    return f"Mamba L={c.num_layers} D={c.d_model} E={c.d_inner} N={c.d_state} conv {c.d_conv}"


# ---------------------------------------------------------------------------------------------------- peers


def to_torch(params) -> dict:
    """The parameter state as nested dicts of torch tensors (same dtype, copied)."""
    return jax.tree_util.tree_map(lambda a: torch.from_numpy(np.array(a)), nnx.to_pure_dict(params))


def _rms(x, scale):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * scale


class TorchPeer:
    """Sampling (a step function in a Python loop) and parallel scoring, eager PyTorch, batch-first."""

    vocab: int

    def initial(self, batch: int, num_steps: int):
        """The state before the first token and the logits [B, V] of the first token."""
        raise NotImplementedError

    def step(self, state, tokens, position: int):
        """Consume tokens [B] (0-based ``position``): new state and the next logits [B, V]."""
        raise NotImplementedError

    def logits(self, x):
        """[B, T, V] logits of x_t given x_<t, one parallel pass over the whole sequence."""
        raise NotImplementedError

    def sample(self, batch: int, num_steps: int, generator, per_step: bool = False):
        """Ancestral sample: tokens [B, T] (int64) and the forward log-probability [B] (or [B, T])."""
        state, logits = self.initial(batch, num_steps)
        tokens, log_p = [], []
        for t in range(num_steps):
            lp = torch.log_softmax(logits, dim=-1)
            token = torch.multinomial(lp.exp(), 1, generator=generator)  # [B, 1]
            log_p.append(lp.gather(1, token)[:, 0])
            tokens.append(token[:, 0])
            if t + 1 < num_steps:  # the last token conditions nothing
                state, logits = self.step(state, token[:, 0], t)
        log_p = torch.stack(log_p, dim=1)
        return torch.stack(tokens, dim=1), (log_p if per_step else log_p.sum(1))

    def log_probs(self, x):
        """[B, T] log p(x_t | x_<t)."""
        return torch.log_softmax(self.logits(x), dim=-1).gather(-1, x[..., None])[..., 0]

    def sigma(self, batch: int, num_steps: int, generator):
        """[B] stochastic EP: forward log-probability from sampling minus the reversed sequence's score."""
        x, forward = self.sample(batch, num_steps, generator)
        return forward - self.log_probs(x.flip(1)).sum(1)


class TorchRNN(TorchPeer):
    """Embedding, ``torch.nn.GRU``/``LSTM``/``RNN`` (epjax kernels copied in), linear read-out."""

    def __init__(self, model: rnn.Model, params):
        c = model.config
        p = to_torch(params)
        self.vocab, self.cell, self.hidden, self.layers = c.vocab_size, c.cell, c.hidden_size, c.num_layers
        self.embedding = p["embed"]["embedding"]
        module = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "elman": torch.nn.RNN}[c.cell]
        self.rnn = module(c.embed_size, c.hidden_size, num_layers=c.num_layers, batch_first=True)
        self.rnn = self.rnn.to(self.embedding.dtype).eval()
        with torch.no_grad():
            for layer in range(c.num_layers):
                q = p["layers"][layer]
                # epjax stores kernels [in, G H] (x W); PyTorch weight_ih is [G H, in] (W x), same gate order
                getattr(self.rnn, f"weight_ih_l{layer}").copy_(q["input"]["kernel"].T)
                getattr(self.rnn, f"bias_ih_l{layer}").copy_(q["input"]["bias"])
                getattr(self.rnn, f"weight_hh_l{layer}").copy_(q["recurrent"]["kernel"].T)
                getattr(self.rnn, f"bias_hh_l{layer}").copy_(q["recurrent"]["bias"])
        self.head_w = p["head"]["kernel"].T.contiguous()  # [V, H]
        self.head_b = p["head"]["bias"]

    def initial(self, batch, num_steps):
        h = torch.zeros(self.layers, batch, self.hidden, dtype=self.head_w.dtype)
        state = (h, h.clone()) if self.cell == "lstm" else h
        return state, self.head_b.expand(batch, -1)  # read-out of the zero state: W 0 + b

    def step(self, state, tokens, position):
        out, state = self.rnn(F.embedding(tokens, self.embedding)[:, None], state)  # [B, 1, H]
        return state, F.linear(out[:, 0], self.head_w, self.head_b)

    def logits(self, x):
        out, _ = self.rnn(F.embedding(x[:, :-1], self.embedding))  # [B, T-1, H], one call
        h = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)  # zero state first
        return F.linear(h, self.head_w, self.head_b)


class TorchGPT(TorchPeer):
    """epjax.transformer's GPT written out in PyTorch (nanoGPT layout, epjax's weights)."""

    def __init__(self, model: transformer.Model, params):
        c = model.config
        p = to_torch(params)
        self.vocab, self.D, self.H, self.K = c.vocab_size, c.embed_size, c.num_heads, c.head_size
        self.embedding = p["token_embed"]["embedding"]  # [V, D], tied read-out
        self.bos, self.positions = p["bos"], p["position_embed"]
        self.ln_f = (p["ln_f"]["scale"], p["ln_f"]["bias"])
        if not c.tie_embeddings:
            raise ValueError("the peer implements tied embeddings only")
        lin = lambda q: (q["kernel"].T.contiguous(), q["bias"])  # torch Linear layout [out, in]
        self.blocks = [
            dict(
                ln_1=(b["ln_1"]["scale"], b["ln_1"]["bias"]),
                ln_2=(b["ln_2"]["scale"], b["ln_2"]["bias"]),
                qkv=lin(b["attn"]["qkv"]),
                out=lin(b["attn"]["out"]),
                fc=lin(b["mlp"]["fc"]),
                proj=lin(b["mlp"]["proj"]),
            )
            for b in (p["blocks"][i] for i in sorted(p["blocks"]))
        ]

    def _ln(self, x, sb):
        return F.layer_norm(x, (self.D,), sb[0], sb[1], 1e-5)

    def _mlp(self, b, x):
        return F.linear(F.gelu(F.linear(x, *b["fc"]), approximate="tanh"), *b["proj"])

    def _head(self, z):
        return F.linear(self._ln(z, self.ln_f), self.embedding)

    def logits(self, x):
        B, T = x.shape
        z = torch.cat([self.bos.expand(B, 1, -1), F.embedding(x[:, :-1], self.embedding)], dim=1)
        z = z + self.positions[:T]  # [B, T, D]
        for b in self.blocks:
            qkv = F.linear(self._ln(z, b["ln_1"]), *b["qkv"]).view(B, T, 3, self.H, self.K)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, H, T, K] each
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            z = z + F.linear(y.transpose(1, 2).reshape(B, T, self.D), *b["out"])
            z = z + self._mlp(b, self._ln(z, b["ln_2"]))
        return self._head(z)

    def _decode(self, cache, z, position):
        B = z.shape[0]
        for b, (keys, values) in zip(self.blocks, cache, strict=True):
            qkv = F.linear(self._ln(z, b["ln_1"]), *b["qkv"]).view(B, 3, self.H, self.K)
            keys[:, :, position] = qkv[:, 1]
            values[:, :, position] = qkv[:, 2]
            y = F.scaled_dot_product_attention(  # one query row against the filled slots only
                qkv[:, 0, :, None], keys[:, :, : position + 1], values[:, :, : position + 1]
            )  # [B, H, 1, K]
            z = z + F.linear(y.reshape(B, self.D), *b["out"])
            z = z + self._mlp(b, self._ln(z, b["ln_2"]))
        return cache, self._head(z)

    def initial(self, batch, num_steps):
        shape = (batch, self.H, num_steps + 1, self.K)
        cache = [(self.bos.new_zeros(shape), self.bos.new_zeros(shape)) for _ in self.blocks]
        z = (self.bos + self.positions[0]).expand(batch, -1)
        return self._decode(cache, z, 0)

    def step(self, state, tokens, position):
        z = F.embedding(tokens, self.embedding) + self.positions[position + 1]  # BOS holds position 0
        return self._decode(state, z, position + 1)


class TorchSSM(TorchPeer):
    """epjax.ssm (S4D or Mamba) written out in PyTorch; see the module docstring for the scoring methods."""

    def __init__(self, model: ssm.Model, params):
        c = model.config
        p = to_torch(params)
        self.vocab, self.kind, self.N, self.K, self.R = c.vocab_size, c.kind, c.d_state, c.d_conv, c.rank
        self.embedding, self.bos = p["embed"]["embedding"], p["bos"]
        self.norm = p["norm"]["scale"]
        self.head = (p["head"]["kernel"].T.contiguous(), p["head"]["bias"])
        self.layers = []
        for i in sorted(p["layers"]):
            q = p["layers"][i]
            if c.kind == "s4d":
                A = -torch.exp(q["log_A_real"]) + 1j * q["A_imag"]
                dtA = torch.exp(q["log_dt"])[:, None] * A
                Abar = torch.exp(dtA)
                self.layers.append(
                    dict(
                        norm=q["norm"]["scale"],
                        dtA=dtA,
                        Abar=Abar,
                        Bbar=(Abar - 1) / A,
                        C=q["C_re"] + 1j * q["C_im"],
                        D=q["D"],
                        out=(q["out"]["kernel"].T.contiguous(), q["out"]["bias"]),
                        kernels={},
                    )
                )
            else:
                self.layers.append(
                    dict(
                        norm=q["norm"]["scale"],
                        in_proj=q["in_proj"]["kernel"].T.contiguous(),
                        conv_w=q["conv_w"],  # [K, E]
                        conv_w1d=q["conv_w"].T.contiguous()[:, None, :],  # [E, 1, K] for a depthwise conv1d
                        conv_b=q["conv_b"],
                        x_proj=q["x_proj"]["kernel"].T.contiguous(),
                        dt_proj=(q["dt_proj"]["kernel"].T.contiguous(), q["dt_proj"]["bias"]),
                        A=-torch.exp(q["A_log"]),  # [E, N]
                        D=q["D"],
                        out_proj=q["out_proj"]["kernel"].T.contiguous(),
                    )
                )

    def _readout(self, u):
        return F.linear(_rms(u, self.norm), *self.head)

    # --- S4D
    def _s4d_mix(self, q, u, y):
        a, g = F.linear(F.gelu(y, approximate="tanh"), *q["out"]).chunk(2, dim=-1)
        return u + a * torch.sigmoid(g)

    def _s4d_kernel(self, q, T):
        # K_l = Re(sum_n C_n Bbar_n Abar_n^l), l < T: [H, T]
        if T not in q["kernels"]:
            powers = torch.exp(q["dtA"][..., None] * torch.arange(T, dtype=q["D"].dtype))  # [H, N, T]
            q["kernels"][T] = torch.einsum("hn,hnl->hl", q["C"] * q["Bbar"], powers).real.contiguous()
        return q["kernels"][T]

    def _s4d_layer(self, q, u):
        T = u.shape[1]
        v = _rms(u, q["norm"])  # [B, T, H]
        n = 2 * T  # zero padding: the FFT's circular convolution becomes the causal linear one
        y = torch.fft.irfft(
            torch.fft.rfft(v.transpose(1, 2), n=n) * torch.fft.rfft(self._s4d_kernel(q, T), n=n), n=n
        )[..., :T].transpose(1, 2)
        return self._s4d_mix(q, u, y + q["D"] * v)

    def _s4d_step(self, q, h, u):
        v = _rms(u, q["norm"])
        h = q["Abar"] * h + q["Bbar"] * v[..., None]  # [B, H, N] complex
        return h, self._s4d_mix(q, u, (q["C"] * h).sum(-1).real + q["D"] * v)

    # --- Mamba
    def _mamba_selective(self, q, c):
        dt, B, C = F.linear(c, q["x_proj"]).split([self.R, self.N, self.N], dim=-1)
        return F.softplus(F.linear(dt, *q["dt_proj"])), B, C

    def _mamba_gate(self, q, u, y, c, z):
        return u + F.linear((y + q["D"] * c) * F.silu(z), q["out_proj"])

    def _mamba_layer(self, q, u):
        T = u.shape[1]
        v, z = F.linear(_rms(u, q["norm"]), q["in_proj"]).chunk(2, dim=-1)  # [B, T, E] each
        conv = F.conv1d(v.transpose(1, 2), q["conv_w1d"], q["conv_b"], padding=self.K - 1, groups=v.shape[-1])
        c = F.silu(conv[..., :T].transpose(1, 2))  # causal: keep the first T outputs
        delta, B, C = self._mamba_selective(q, c)
        du = delta * c
        h = u.new_zeros(u.shape[0], q["A"].shape[0], self.N)  # [B, E, N]
        ys = []
        for t in range(T):
            h = torch.exp(delta[:, t, :, None] * q["A"]) * h + du[:, t, :, None] * B[:, t, None, :]
            ys.append(torch.bmm(h, C[:, t, :, None])[..., 0])
        return self._mamba_gate(q, u, torch.stack(ys, dim=1), c, z)

    def _mamba_step(self, q, state, u):
        window, h = state  # window [B, K-1, E]: the last conv inputs, oldest first
        v, z = F.linear(_rms(u, q["norm"]), q["in_proj"]).chunk(2, dim=-1)
        window = torch.cat([window, v[:, None]], dim=1)  # [B, K, E]
        c = F.silu((q["conv_w"] * window).sum(1) + q["conv_b"])
        delta, B, C = self._mamba_selective(q, c)
        h = torch.exp(delta[..., None] * q["A"]) * h + (delta * c)[..., None] * B[:, None, :]
        y = torch.bmm(h, C[..., None])[..., 0]
        return (window[:, 1:], h), self._mamba_gate(q, u, y, c, z)

    # --- the peer interface
    def logits(self, x):
        u = torch.cat([self.bos.expand(x.shape[0], 1, -1), F.embedding(x[:, :-1], self.embedding)], dim=1)
        for q in self.layers:
            u = self._s4d_layer(q, u) if self.kind == "s4d" else self._mamba_layer(q, u)
        return self._readout(u)

    def _feed(self, state, u):
        new = []
        for q, s in zip(self.layers, state, strict=True):
            s, u = self._s4d_step(q, s, u) if self.kind == "s4d" else self._mamba_step(q, s, u)
            new.append(s)
        return new, self._readout(u)

    def initial(self, batch, num_steps):
        if self.kind == "s4d":
            state = [q["Abar"].new_zeros(batch, *q["Abar"].shape) for q in self.layers]
        else:
            E = self.layers[0]["A"].shape[0]
            zeros = lambda *shape: self.bos.new_zeros(batch, *shape)
            state = [(zeros(self.K - 1, E), zeros(E, self.N)) for _ in self.layers]
        return self._feed(state, self.bos.expand(batch, -1))

    def step(self, state, tokens, position):
        return self._feed(state, F.embedding(tokens, self.embedding))


def make_peer(family: str, model, params) -> TorchPeer:
    if family in rnn.CELLS:
        return TorchRNN(model, params)
    if family == "transformer":
        return TorchGPT(model, params)
    return TorchSSM(model, params)


def torch_call(fn: Callable[[], Any], threads: int) -> Callable[[], Any]:
    """``fn`` run under ``torch.inference_mode`` with ``threads`` intra-op threads (restored afterwards)."""

    def call():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return fn()
        finally:
            torch.set_num_threads(before)

    return call


# ---------------------------------------------------------------------------------------------------- epjax


def epjax_parts(model, T: int):
    """Batched sampling (``sample_with_log_probs``) and scoring of the reversed sequences, to be jitted."""

    def sample(params, keys):  # keys [B] -> tokens [B, T], log-probs [B, T]
        return jax.vmap(lambda k: model.sample_with_log_probs(k, params, T))(keys)

    def score(params, x):  # x [B, T] -> [B] log-likelihood of each reversed sequence
        return jax.vmap(lambda xi: jnp.sum(model.log_probs(params, epjax.reverse_tokens(xi))))(x)

    return sample, score


# ---------------------------------------------------------------------------------------------------- timing


class Timing(NamedTuple):
    first: float  # the warm-up call (compile + run, or a small run that initialises a peer's code path)
    median: float
    best: float  # fastest repeat: the figure least disturbed by other load on a shared machine
    repeats: int

    @classmethod
    def of(cls, times: list[float], first: float = 0.0) -> Timing:
        return cls(first, statistics.median(times), min(times), len(times))


class Job(NamedTuple):
    run: Callable[[], object]  # the timed call
    warm: Callable[[], object] | None = None  # warm-up; None: one untimed call of ``run``
    max_repeats: int | None = None  # cap for this job (e.g. a peer that is very slow under load)


def measure_together(
    jobs: list[Job], *, budget_s: float, min_repeats: int, max_repeats: int = 20
) -> tuple[list[float], list[list[float]]]:
    """Warm up every job, then time them round-robin, blocking on results.

    Returns each job's warm-up seconds and its list of timed seconds.

    Rounds go on until ``min_repeats`` rounds and ``budget_s`` (summed over jobs) are both reached, or
    ``max_repeats``; a job with its own ``max_repeats`` sits out later rounds. Interleaving spreads other
    processes' load over all peers alike, so their ratio is fairer than from back-to-back blocks. PyTorch on
    CPU is synchronous; ``jax.block_until_ready`` waits for JAX results.
    """
    firsts = []
    for job in jobs:
        t0 = time.perf_counter()
        jax.block_until_ready((job.warm or job.run)())
        firsts.append(time.perf_counter() - t0)
    times: list[list[float]] = [[] for _ in jobs]
    total, rounds = 0.0, 0
    while rounds < max_repeats and (rounds < min_repeats or total < budget_s):
        for job, ts in zip(jobs, times, strict=True):
            if job.max_repeats is not None and len(ts) >= job.max_repeats:
                continue
            t0 = time.perf_counter()
            jax.block_until_ready(job.run())
            ts.append(time.perf_counter() - t0)
            total += ts[-1]
        rounds += 1
    return firsts, times


def aot(model, fn, *args) -> tuple[Callable[[], object], float]:
    """Compile ``fn`` for ``args`` ahead of time (no run), as epjax compiles its own entry points for
    ``model`` (``compiler_options=epjax.compiler_options(model)``); the call and the compile seconds."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=epjax.compiler_options(model) or None).lower(*args).compile()
    return partial(compiled, *args), time.perf_counter() - t0


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.1f}"


def fmt_timing(t: Timing | None) -> str:
    return "—" if t is None else f"{fmt_time(t.median)} ({fmt_time(t.best)})"


def fmt_ratio(slow: Timing, fast: Timing) -> str:
    """Throughput of ``fast`` over ``slow``: medians (best times)."""
    return f"{slow.median / fast.median:.2f}× ({slow.best / fast.best:.2f}×)"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- checks


def _agreement(family, model, params, peer, T: int, B: int) -> tuple[float, float, float]:
    """Max |Δ log p_t| between epjax and the peer on epjax samples (forward and reversed), max |Δ| between
    the peer sampler's forward log-probs and epjax's score of the same tokens, and the spread of log p_t."""
    keys = jax.random.split(jax.random.key(11), B)
    x = jax.vmap(lambda k: model.sample(k, params, T))(keys)
    both = jnp.concatenate([x, x[:, ::-1]])
    ours = np.asarray(jax.vmap(lambda xi: model.log_probs(params, xi))(both))
    with torch.inference_mode():
        theirs = peer.log_probs(torch.from_numpy(np.array(both)).long()).numpy()
        xt, fwd = peer.sample(B, T, torch.Generator().manual_seed(11), per_step=True)
    rescored = np.asarray(jax.vmap(lambda xi: model.log_probs(params, xi))(jnp.asarray(xt.numpy(), jnp.int32)))
    return (
        float(np.max(np.abs(ours - theirs))),
        float(np.max(np.abs(rescored - fwd.numpy()))),
        float(np.std(ours)),
    )


F64_TOL = 1e-9  # float64 on both sides: only round-off remains (|log p_t| ~ 5, ~1e-14 relative per op)


def check_agreement(s: Sizes) -> str:
    """Per-step log-probabilities, epjax vs peer: float64 (gated) and float32 at benchmark size (reported)."""
    rows = []
    T_check, B_check = min(s.T, 64), 4
    for family in s.families:
        with jax.enable_x64(True):
            model = make_model(family, s, T_check, "float64")
            params = model.init(jax.random.key(5))
            peer = make_peer(family, model, params)
            d64, s64, spread = _agreement(family, model, params, peer, T_check, B_check)
        model = make_model(family, s, T_check)
        params = model.init(jax.random.key(5))
        d32, s32, _ = _agreement(family, model, params, make_peer(family, model, params), T_check, B_check)
        rows.append(
            [
                family,
                f"{B_check} × {T_check}",
                f"{spread:.3f}",
                f"{d64:.1e}",
                f"{s64:.1e}",
                f"{d32:.1e}",
                f"{s32:.1e}",
            ]
        )
        log(f"  check {family}: float64 {d64:.1e} / {s64:.1e}, float32 {d32:.1e} / {s32:.1e}")
        if not (d64 < F64_TOL and s64 < F64_TOL):
            raise SystemExit(
                f"the PyTorch peer of {family} disagrees with epjax in float64: max |Δ log p_t| = {d64:.2e} "
                f"(epjax samples), {s64:.2e} (peer samples); tolerance {F64_TOL:.0e}"
            )
    return table(
        [
            "family",
            "B × T",
            "sd of log p_t",
            "float64: max |Δ log p_t|, scoring",
            "float64: sampler's log-probs",
            "float32: scoring",
            "float32: sampler's log-probs",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- (a)


def num_parameters(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


def _torch_jobs(peer: TorchPeer, B: int, T: int, threads: int, max_repeats: int | None, kept: dict):
    """Sampling and scoring jobs of the peer at ``threads``; the scoring job scores the latest sample.

    Each round runs sampling before scoring, so one round is one full EP computation and its sigma values
    (forward log-probabilities minus the reversed score) are kept in ``kept``.
    """
    gen = torch.Generator().manual_seed(1)

    def sample():
        kept["x"], kept["forward"] = peer.sample(B, T, gen)

    def score():
        kept["sigma"] = kept["forward"] - peer.log_probs(kept["x"].flip(1)).sum(1)

    def warm():  # a small run through the same code paths (thread pool, allocator, kernels)
        x, _ = peer.sample(2, min(T, 4), gen)
        peer.log_probs(x.flip(1))

    return [
        Job(torch_call(sample, threads), torch_call(warm, threads), max_repeats),
        Job(torch_call(score, threads), lambda: None, max_repeats),
    ]


def _public_call(kept: dict, key, model, params, T: int, B: int) -> float:
    kept["epjax"] = epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)
    return kept["epjax"].mean


def bench_monte_carlo(s: Sizes, min_repeats: int, default_threads_repeats: int | None):
    rows, part_rows = [], []
    T, B = s.T, s.batch
    for family in s.families:
        model = make_model(family, s, T)
        params = model.init(jax.random.key(0))
        peer = make_peer(family, model, params)
        key = jax.random.key(1)
        kept: dict[str, Any] = {}
        run_epjax = partial(_public_call, kept, key, model, params, T, B)

        # epjax's parts, compiled ahead of time (no warm-up run needed); the same keys as the public call
        sample, score = epjax_parts(model, T)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(B, dtype=jnp.uint32))
        run_sample, compile_sample = aot(model, sample, params, keys)
        x = run_sample()[0]
        run_score, compile_score = aot(model, score, params, x)
        kept_1: dict[str, Any] = {}
        kept_n: dict[str, Any] = {}
        jobs = [
            Job(run_epjax),
            Job(run_sample, lambda: None),
            Job(run_score, lambda: None),
            *_torch_jobs(peer, B, T, 1, None, kept_1),
            *_torch_jobs(peer, B, T, TORCH_DEFAULT_THREADS, default_threads_repeats, kept_n),
        ]
        log(f"  MC {family} ...")
        firsts, times = measure_together(jobs, budget_s=s.budget_s, min_repeats=min_repeats)
        te = Timing.of(times[0], firsts[0])
        pe_s, pe_c = Timing.of(times[1], compile_sample), Timing.of(times[2], compile_score)
        p1_s, p1_c, pn_s, pn_c = (Timing.of(t) for t in times[3:7])
        # a PyTorch EP computation is one sampling call followed by one scoring call: sum them per round
        t1 = Timing.of([a + b for a, b in zip(times[3], times[4], strict=True)])
        tn = Timing.of([a + b for a, b in zip(times[5], times[6], strict=True)])

        est = kept["epjax"]
        sig = kept_1["sigma"].double().numpy()
        t_mean, t_se = float(sig.mean()), float(sig.std(ddof=1) / math.sqrt(sig.size))
        z = (est.mean - t_mean) / math.hypot(est.stderr, t_se)
        tokens = B * T
        rows.append(
            [
                describe_model(family, model),
                f"{num_parameters(params) / 1e6:.2f} M",
                fmt_timing(te),
                f"{fmt_rate(B / te.median)} / {fmt_rate(tokens / te.median)}",
                fmt_timing(t1),
                f"{fmt_rate(B / t1.median)} / {fmt_rate(tokens / t1.median)}",
                f"**{fmt_ratio(t1, te)}**",
                fmt_timing(tn),
                fmt_ratio(tn, te),
                fmt_time(max(te.first - te.median, 0.0)),
                f"{te.repeats} / {t1.repeats} / {tn.repeats}",
                f"{est.mean:.3f} ± {est.stderr:.3f} / {t_mean:.3f} ± {t_se:.3f} (z {z:+.1f})",
            ]
        )
        part_rows.append(
            [
                family,
                fmt_timing(pe_s),
                fmt_timing(p1_s),
                fmt_ratio(p1_s, pe_s),
                fmt_timing(pn_s),
                fmt_timing(pe_c),
                fmt_timing(p1_c),
                fmt_ratio(p1_c, pe_c),
                fmt_timing(pn_c),
                f"{fmt_time(compile_sample)} / {fmt_time(compile_score)}",
            ]
        )
        log(
            f"  MC {family}: epjax {fmt_timing(te)}, torch 1 thread {fmt_timing(t1)}, "
            f"torch {TORCH_DEFAULT_THREADS} threads {fmt_timing(tn)}"
        )
    main = table(
        [
            "model",
            "params",
            "epjax EP median (best)",
            "epjax traj/s / tokens/s",
            "torch (1 thread) median (best)",
            "torch (1 thread) traj/s / tokens/s",
            "epjax ÷ torch (1 thread)",
            f"torch ({TORCH_DEFAULT_THREADS} threads, default) median (best)",
            f"epjax ÷ torch ({TORCH_DEFAULT_THREADS} threads)",
            "epjax compile",
            "repeats epjax / torch 1 / torch default",
            "EP estimate: epjax / torch",
        ],
        rows,
    )
    parts = table(
        [
            "family",
            "sample: epjax",
            "sample: torch (1 thr.)",
            "epjax ÷ torch (1 thr.)",
            f"sample: torch ({TORCH_DEFAULT_THREADS} thr.)",
            "score reversed: epjax",
            "score: torch (1 thr.)",
            "epjax ÷ torch (1 thr.)",
            f"score: torch ({TORCH_DEFAULT_THREADS} thr.)",
            "epjax compile sample / score",
        ],
        part_rows,
    )
    return main, parts


# ---------------------------------------------------------------------------------------------------- (b)


def fit_exponent(Ts: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(time) against log(T)."""
    return float(np.polyfit(np.log(Ts), np.log(seconds), 1)[0])


def _score_reversed(peer: TorchPeer, x):
    return peer.log_probs(x.flip(1)).sum(1)


def bench_scaling(s: Sizes, min_repeats: int) -> str:
    rows = []
    Ts = list(s.scaling_T)
    for family in s.families:
        model = make_model(family, s, max(Ts))
        params = model.init(jax.random.key(0))
        peer = make_peer(family, model, params)
        epjax_times, torch_times, cells = [], [], []
        for T in Ts:
            _, score = epjax_parts(model, T)
            x = jax.random.randint(jax.random.key(T), (s.scaling_batch, T), 0, s.vocab, jnp.int32)
            run, _ = aot(model, score, params, x)
            xt = torch.from_numpy(np.array(x)).long()
            warm_x = xt[:1, : min(T, 8)]
            _, (te, tt) = measure_together(
                [
                    Job(run, lambda: None),
                    Job(
                        torch_call(partial(_score_reversed, peer, xt), 1),
                        torch_call(partial(peer.log_probs, warm_x), 1),
                    ),
                ],
                budget_s=s.budget_s / 8,
                min_repeats=min_repeats,
            )
            te, tt = Timing.of(te), Timing.of(tt)
            epjax_times.append(te)
            torch_times.append(tt)
            cells.append(f"{fmt_time(te.median)} / {fmt_time(tt.median)}")
            log(f"  scaling {family} T={T}: epjax {fmt_timing(te)}, torch (1 thread) {fmt_timing(tt)}")
        k_e = fit_exponent(Ts, [t.median for t in epjax_times])
        k_b = fit_exponent(Ts, [t.best for t in epjax_times])
        k_t = fit_exponent(Ts, [t.median for t in torch_times])
        k_tb = fit_exponent(Ts, [t.best for t in torch_times])
        rows.append([family, *cells, f"**{k_e:.2f}** ({k_b:.2f})", f"{k_t:.2f} ({k_tb:.2f})"])
    return table(
        [
            "family",
            *(f"T = {T}: epjax / torch" for T in Ts),
            "epjax exponent k: medians (best)",
            "torch exponent k: medians (best)",
        ],
        rows,
    )


# ---------------------------------------------------------------------------------------------------- report


def prose(text: str) -> str:
    return " ".join(text.split())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    """``git describe --always --dirty`` of the checkout holding this script, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"git {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else "unknown"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def header(argv: list[str], s: Sizes) -> str:
    import flax
    import jaxlib

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    xla_flags = os.environ.get("XLA_FLAGS", "")
    jax_threads = (
        "1 (`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`)"
        if "xla_cpu_multi_thread_eigen=false" in xla_flags
        else f"XLA's default intra-op pool (all {os.cpu_count()} cores; `XLA_FLAGS` = `{xla_flags or 'unset'}`)"
    )
    lines = [
        f"## {now} — benchmarks/neural.py",
        "",
        f"- device: CPU {cpu_model()}, {os.cpu_count()} cores; `jax.devices()` = `{jax.devices()}`; "
        f"load average at start {load_average()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"flax {flax.__version__}, torch {torch.__version__}, numpy {np.__version__}, epjax {epjax.__version__}",
        f"- epjax source: {git_revision()}",
        f"- command: `{shlex.join(['python', *argv])}`",
        "- XLA compiler options of epjax's computations (`epjax.compiler_options(model)`): "
        + "; ".join(
            f"{f} `{epjax.compiler_options(make_model(f, s, s.T)) or 'none (XLA defaults)'}`" for f in s.families
        ),
        f"- threads: JAX {jax_threads}; PyTorch timed at its default `torch.get_num_threads()` = "
        f"{TORCH_DEFAULT_THREADS} and at `torch.set_num_threads(1)`, eager, `torch.inference_mode()`, "
        f"`OMP_WAIT_POLICY` = `{os.environ.get('OMP_WAIT_POLICY', 'unset')}`",
        f"- sizes: vocabulary {s.vocab}, width {s.width}, {s.layers} layers, T = {s.T}, batch {s.batch} "
        "(one compiled batch: `batch_size = num_samples`); float32 for the timings, float64 for the check",
        '- times are "median (best)" over repeats after a warm-up call; the peers of one row are timed in '
        "alternation (round-robin); ratios > 1 mean epjax is faster",
    ]
    return "\n".join(lines)


AGREE_TEXT = """
The same parameters on both sides (the peer is built from epjax's parameter state). "scoring": max over
steps of |Δ log p(x_t | x_<t)| between ``model.log_probs`` and the peer's parallel pass, on epjax samples
and on their reversals; "sampler's log-probs": the peer samples with its step function and its per-step
log-probabilities are compared with epjax's score of those tokens (this checks the peer's sampling path,
including the Transformer's key/value cache and the SSM recurrences). The run stops unless the float64
differences are below {tol:.0e}; the float32 columns are the benchmark models, for information.
"""
MC_TEXT = """
One Monte Carlo EP estimate of B trajectories of T tokens. epjax: the public call
``epjax.entropy_production(key, model, params, num_steps=T, num_samples=B, batch_size=B)`` (validation,
one jitted vmapped batch of sample-with-log-probs + scoring of the reversed sequence, host-side summary;
its warm-up call compiles). PyTorch: the same work as a plain program, sampling with log-probs in a Python
loop of T steps over the batch, then one parallel scoring pass of the reversed batch; its time is the
sampling call plus the scoring call of the same round (they are timed separately for the table below), and
its warm-up is a small run through the same code. traj/s = B / time, tokens/s = B T / time (each token is
sampled once and scored once). "compile" is epjax's first call minus its median. The last column checks
that both compute the same quantity: mean ± stderr of sigma over the B trajectories of one call (different
random streams; the PyTorch one from a 1-thread round), z = difference / combined stderr.
"""
PARTS_TEXT = """
The two halves on their own, same B and T, timed in the same rounds as the table above: "sample" is the
batched ancestral sampling with forward log-probabilities (epjax: ``jax.vmap(model.sample_with_log_probs)``,
jitted), "score reversed" the log-likelihood of the B reversed samples (epjax: ``jax.vmap(model.log_probs)``
of ``reverse_tokens(x)``, summed, jitted); both compiled ahead of time
(``jit(..., compiler_options=epjax.compiler_options(model)).lower(...).compile()``, the options epjax's own
entry points use for the model; last column). epjax on CPU: RNN and Mamba layers score with ``lax.scan``
over time, input projections hoisted out of the loop (``ssm.Config.scan_chunk = None`` picks the
sequential scan on CPU), S4D in its convolution form (impulse response and FFT, like the PyTorch peer);
the Transformer scores with one causal pass and samples with a key/value cache grown in four windows of
T/4 steps, each step attending to all slots of its window under a mask (the PyTorch decoder slices the
filled ones). The peers' methods are in the script's docstring.
"""
SCALING_TEXT = """
Scoring alone against T: B = {B} random token sequences of each length, ``jax.vmap(log_probs)`` of the
reversed sequences (jitted, compiled ahead of time for every T) vs the peer's scoring pass at 1 thread; each
cell is "epjax / torch" median. The exponent k is the least-squares slope of log(time) on log(T) over
T = {Ts}, from the medians (from the best times in parentheses). A per-token cost gives k ≈ 1. Attention's
T² term dominates only once it outweighs the per-token matrix products: per token and layer, QKᵀ and the
weighted sum of values cost about 2 T D multiply-adds when the whole T × T square is computed under a mask
and materialised (epjax's ``_causal_attention``), against 12 D² for the projections and the MLP (width D),
so the flop counts cross at T ≈ 6 D = {cross}; the softmax over the T × T scores (exp, memory traffic)
brings the crossing earlier on a CPU. PyTorch's CPU ``scaled_dot_product_attention(is_causal=True)`` is a
fused flash-attention kernel that skips the key blocks above the diagonal (half the work, no T × T array).
A Transformer's k therefore lies between 1 and 2 at these lengths. S4D's PyTorch scoring is an FFT
convolution (O(T log T)). The Transformer sweep uses a model with context length {ctx} (the positions
beyond T are unused by the timed calls).
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (a minute or two)")
    parser.add_argument(
        "--out",
        default=None,
        help=f"markdown file to append the section to (default: {RESULTS} for a full run; "
        "a --quick run only prints unless --out is given; '-' prints only)",
    )
    parser.add_argument(
        "--families",
        default=None,
        help="comma-separated subset of gru,lstm,elman,transformer,s4d,mamba (default: all)",
    )
    parser.add_argument(
        "--jax-threads",
        choices=["default", "1"],
        default="default",
        help="1: run XLA single-threaded (sets XLA_FLAGS before jax is imported)",
    )
    parser.add_argument("--skip-scaling", action="store_true", help="omit part (b)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="least number of timed rounds per model (default 3; 2 full)"
    )
    parser.add_argument(
        "--torch-default-repeats",
        type=int,
        default=None,
        help="cap the timed rounds of PyTorch at its default thread count (on a busy machine its OpenMP "
        "threads can wait on each other for minutes; default: no cap)",
    )
    args = parser.parse_args(argv[1:])
    out = args.out if args.out is not None else (None if args.quick else str(RESULTS))
    out = None if out == "-" else out
    sizes = QUICK if args.quick else FULL
    if args.families:
        chosen = tuple(f.strip() for f in args.families.split(","))
        unknown = sorted(set(chosen) - set(FULL.families))
        if unknown:
            parser.error(f"unknown families {unknown}; choose from {FULL.families}")
        sizes = dataclasses.replace(sizes, families=chosen)

    start = time.perf_counter()
    head = header(argv, sizes)
    log("checking agreement ...")
    agree = check_agreement(sizes)
    log("(a) Monte Carlo EP ...")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 2)
    mc, parts = bench_monte_carlo(sizes, repeats, args.torch_default_repeats)
    sections = [
        head,
        "### Agreement check: per-step log-probabilities, epjax vs the PyTorch peers\n\n"
        + prose(AGREE_TEXT.format(tol=F64_TOL))
        + "\n\n"
        + agree,
        f"### (a) Monte Carlo EP throughput (T = {sizes.T}, B = {sizes.batch})\n\n"
        + prose(MC_TEXT)
        + "\n\n"
        + mc,
        "#### Sampling and scoring on their own\n\n" + prose(PARTS_TEXT) + "\n\n" + parts,
    ]
    if not args.skip_scaling:
        log("(b) scoring cost against T ...")
        scaling = bench_scaling(sizes, 3)
        sections.append(
            "### (b) Scoring cost against T\n\n"
            + prose(
                SCALING_TEXT.format(
                    B=sizes.scaling_batch,
                    Ts=", ".join(map(str, sizes.scaling_T)),
                    ctx=max(sizes.scaling_T),
                    cross=6 * sizes.width,
                )
            )
            + "\n\n"
            + scaling
        )
    sections.append(f"Total run time {time.perf_counter() - start:.0f} s; load average at the end {load_average()}.")
    section = "\n\n".join(sections)
    print(section)
    if out:
        path = Path(out)
        if not path.exists() or not path.read_text().strip():
            path.write_text(PREFACE)
        with path.open("a") as f:
            f.write("\n" + section + "\n")
        log(f"appended to {path}")


if __name__ == "__main__":
    main()
