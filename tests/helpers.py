"""Shared test helpers: problem builders and small oracle models."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np

from epjax import cli, kalman

PAPER_SCALAR = dict(A=[[0.9]], C=[[1.0]], Q=[[1.0]], R=[[1.0]])
PAPER_2D = dict(A=[[0.8, 0.3], [0.0, 0.5]], C=[[1.0, 0.5], [0.0, 1.0]], Q=np.eye(2), R=np.eye(2))


def make_state_space(seed: int, n: int, n_y: int, radius: float = 0.9):
    """A random stable state-space model (A, C, Q, R) with positive definite noise covariances."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    C = rng.normal(size=(n_y, n))
    Bq = rng.normal(size=(n, n))
    Br = rng.normal(size=(n_y, n_y))
    Q = Bq @ Bq.T + 0.1 * np.eye(n)
    R = Br @ Br.T + 0.1 * np.eye(n_y)
    return A, C, Q, R


def make_params(seed: int, n: int, n_y: int, radius: float = 0.9) -> kalman.Params:
    """Innovation-form parameters of :func:`make_state_space` (call inside an x64 context for float64)."""
    return kalman.from_state_space(*make_state_space(seed, n, n_y, radius))


def run_cli(*argv):
    """``epjax`` with ``argv`` (any values, made strings), stdout and stderr captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def train_bpe(
    corpus, vocab_size: int = 300, special_tokens=("<|endoftext|>",), *, repeat: int = 4, use_regex: bool = True,
    normalizer=None,
):  # fmt: skip
    """A byte-level BPE (``tokenizers.Tokenizer``) trained on ``corpus`` repeated ``repeat`` times, the special
    tokens taking ids 0, 1, ...; ``use_regex=False`` lets tokens run across words, ``normalizer`` is set first."""
    import tokenizers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) * repeat, trainer)
    return tok


class OneWay:
    """Token 1 can follow token 0 but never the reverse: reversed trajectories can be impossible (sigma = +inf).

    From 0: 0 or 1 with probability 1/2 each; from 1: always 1. Samples are 0...0 1...1. No parameters.
    """

    vocab_size = 2

    def log_probs(self, params, x):
        rest = jnp.where(x[:-1] == 0, jnp.log(0.5), jnp.where(x[1:] == 1, 0.0, -jnp.inf))
        return jnp.concatenate([jnp.log(0.5)[None], rest])

    def sample(self, key, params, num_steps):
        flips = jax.random.bernoulli(key, 0.5, (num_steps,))
        return (jnp.cumsum(flips) > 0).astype(jnp.int32)  # 0...0 1...1
