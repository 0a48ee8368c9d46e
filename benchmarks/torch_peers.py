"""The PyTorch peers of benchmarks/neural.py: epjax's neural families written out in eager PyTorch.

Each peer is built from an epjax model and its *same* parameters (copied into torch tensors of the same dtype),
samples ancestrally with a step function in a Python loop (collecting the forward log-probabilities) and
scores a whole sequence in one parallel pass (teacher forcing), batch-first:

- :class:`TorchRNN` (``epjax.rnn``: GRU, LSTM, Elman): an embedding lookup, ``torch.nn.GRU`` / ``LSTM`` /
  ``RNN`` with epjax's kernels copied in, a linear read-out. Sampling calls the stacked module one step at a
  time; scoring calls it once on the whole sequence (PyTorch's CPU kernel precomputes the input projections).
- :class:`TorchGPT` (``epjax.transformer``): a handwritten GPT (nanoGPT layout, the same weights): scoring is
  one causal pass with ``F.scaled_dot_product_attention(is_causal=True)``; sampling decodes with a key/value
  cache, each step attending to the ``position + 1`` cached slots only.
- :class:`TorchSSM` (``epjax.ssm``): ``kind="s4d"`` samples by stepping the complex diagonal recurrence and
  scores with the S4D reference method, a causal FFT convolution with the kernel
  ``K_l = Re(sum_n C_n Bbar_n Abar_n^l)`` (O(T log T)); ``kind="mamba"`` samples by stepping the conv window
  and the selective recurrence, and scores with all projections and the causal depthwise conv for the whole
  sequence at once, then a sequential loop over time for the selective recurrence (as ``selective_scan_ref``
  in ``mamba_ssm``, but forming ``exp(Delta_t A)`` step by step: materialising it for the whole batch would
  take B T E N floats).

:func:`make_peer` picks the peer of a family; :func:`torch_call` runs a call at a given thread count under
``torch.inference_mode``. ``benchmarks/neural.py`` checks every peer against epjax in float64 before timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx

from epjax import rnn, ssm, transformer

DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own choice, read before any call changes it


def to_torch(params) -> dict:
    """The parameter state as nested dicts of torch tensors (same dtype, copied)."""
    return jax.tree_util.tree_map(lambda a: torch.from_numpy(np.array(a)), nnx.to_pure_dict(params))


def _rms(x, scale):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * scale


class TorchPeer:
    """Sampling (a step function in a Python loop) and parallel scoring, eager PyTorch, batch-first.

    A peer implements :meth:`initial`, :meth:`step` and :meth:`logits`; sampling and scoring follow.
    """

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

    def score_reversed(self, x):
        """[B] log-likelihood of each token-reversed sequence of x [B, T]."""
        return self.log_probs(x.flip(1)).sum(1)


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
    """epjax.ssm (S4D or Mamba) written out in PyTorch; the module docstring gives the scoring methods."""

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


def trainable_parameters(peer: TorchPeer) -> list[torch.Tensor]:
    """The parameter tensors of an RNN or GPT peer, each once, switched to ``requires_grad`` (for training).

    ``peer.logits`` then builds an autograd graph (outside ``torch.inference_mode``): benchmarks/aot.py trains
    the peers with ``torch.optim.AdamW``. The SSM peer holds tensors derived from its parameters (discretised
    ``A``, cached kernels), not the parameters themselves, so it cannot be trained this way.
    """
    if not isinstance(peer, TorchRNN | TorchGPT):
        raise ValueError(f"only the RNN and GPT peers can be trained, got {type(peer).__name__}")
    found: dict[int, torch.Tensor] = {}

    def collect(x):
        if isinstance(x, torch.Tensor):
            found.setdefault(id(x), x)
        elif isinstance(x, torch.nn.Module):
            for p in x.parameters():
                found.setdefault(id(p), p)
        elif isinstance(x, dict):
            for v in x.values():
                collect(v)
        elif isinstance(x, list | tuple):
            for v in x:
                collect(v)

    collect(vars(peer))
    return [t.requires_grad_(True) for t in found.values()]
