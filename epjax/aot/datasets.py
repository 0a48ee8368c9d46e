"""Synthetic languages whose arrow-of-time gap has a known sign (docs/mathematics.md §8.3).

Each generator is seeded, returns a :class:`Dataset` of equal-length token sequences, and says which sign of
``∂`` a learner should show:

- :func:`prime_products`: ``p₁ × p₂ = n`` with primes ``p₁ < p₂`` in fixed-width zero-padded digits. Read
  forwards a model multiplies; read backwards it must factor. Expected ``∂ > 0``.
- :func:`linear_language`: ``x : y`` over F₂ with ``y = A x`` for a sparse invertible ``A``. Forwards a model
  learns ``A`` (each output bit a parity of a few input bits); backwards it must learn ``A⁻¹``, typically dense.
  Expected ``∂ > 0``; with ``swap=True`` the sequences are ``x : A⁻¹ x`` and the sign flips.
- :func:`exchangeable`: each sequence i.i.d. from its own random distribution over the alphabet. Its law is
  unchanged by *any* permutation of positions, so every gap is noise: the control whose interval must cover 0.
- :func:`palindromes`: sequences equal to their own reversal, so the backward data *are* the forward data and the
  twins train identically: ``∂ = 0`` exactly (a check of the pairing, not a statistical control).

Every map above is a bijection of the sequences it writes, so a perfect learner has no gap in either direction:
a gap is learnability, never irreversibility.

>>> d = prime_products(num_sequences=3, digits=2, seed=0)
>>> d.decode(d.sequences[0])
'29×73=2117'
>>> d.expected_sign, d.sequences.shape
(1, (3, 10))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epjax._checks import check_positive_int

#: separators of the synthetic languages, after the digits (``0``-``9`` are ids 0-9)
PRODUCT_TOKENS = tuple("0123456789") + ("×", "=")
LINEAR_TOKENS = ("0", "1", ":")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Equal-length token sequences with their alphabet and what a gap on them should show.

    Attributes:
        name: a short name (``"prime-products"``, ``"linear"``, ...).
        sequences: int32 ``[N, T]`` token ids.
        tokens: the alphabet: ``tokens[i]`` is the text of id ``i`` (``vocab_size = len(tokens)``).
        expected_sign: ``+1`` (forward easier), ``-1`` (backward easier), ``0`` (no gap) for reversal, or
            ``None`` when the data do not say.
        description: one line for tables and figures.
        meta: the generator's parameters and products (e.g. the matrix ``A`` of a linear language).
    """

    name: str
    sequences: np.ndarray
    tokens: tuple[str, ...]
    expected_sign: int | None
    description: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        """Size of the alphabet."""
        return len(self.tokens)

    def decode(self, ids: Any) -> str:
        """The text of one sequence of ids."""
        return "".join(self.tokens[int(i)] for i in np.asarray(ids).reshape(-1))


def primes_below(limit: int) -> np.ndarray:
    """The primes ``< limit`` in increasing order (sieve of Eratosthenes).

    >>> primes_below(20).tolist()
    [2, 3, 5, 7, 11, 13, 17, 19]
    """
    limit = check_positive_int("limit", limit)
    sieve = np.ones(max(limit, 2), dtype=bool)
    sieve[:2] = False
    for p in range(2, math.isqrt(max(limit - 1, 1)) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.flatnonzero(sieve[:limit])


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """``[N] -> [N, width]`` decimal digits, most significant first, zero-padded."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers) % 10


def prime_products(num_sequences: int = 4000, *, digits: int = 3, seed: int = 0) -> Dataset:
    """``p₁ × p₂ = n`` for distinct pairs of primes ``p₁ < p₂ < 10**digits``, in fixed-width digits.

    Factors are zero-padded to ``digits`` digits and the product to ``2 * digits``, so sequences have length
    ``4 * digits + 2``.

    Pairs are drawn without replacement, so no sequence repeats (held-out sequences are unseen products).

    Args:
        num_sequences: how many sequences; at most the number of pairs of primes below ``10**digits``.
        digits: width of each factor (1 to 6).
        seed: NumPy seed of the draw.

    Raises:
        ValueError: ``digits`` out of range or more sequences asked for than there are pairs.
    """
    num_sequences = check_positive_int("num_sequences", num_sequences)
    digits = check_positive_int("digits", digits)
    if digits > 6:
        raise ValueError(f"`digits` must be at most 6 (products fit 12 digits), got {digits}.")
    primes = primes_below(10**digits)
    num_pairs = len(primes) * (len(primes) - 1) // 2
    if num_sequences > num_pairs:
        raise ValueError(
            f"`num_sequences` must be at most {num_pairs}, the number of pairs of primes below 10**{digits}, "
            f"got {num_sequences}."
        )
    rng = np.random.default_rng(seed)
    rows = np.triu_indices(len(primes), k=1)
    pick = rng.choice(num_pairs, size=num_sequences, replace=False)
    p1, p2 = primes[rows[0][pick]].astype(np.int64), primes[rows[1][pick]].astype(np.int64)
    n = num_sequences
    seqs = np.concatenate(
        [
            _digits(p1, digits),
            np.full((n, 1), 10),
            _digits(p2, digits),
            np.full((n, 1), 11),
            _digits(p1 * p2, 2 * digits),
        ],
        axis=1,
    ).astype(np.int32)
    return Dataset(
        "prime-products",
        seqs,
        PRODUCT_TOKENS,
        expected_sign=1,
        description=f"prime products, {digits}-digit factors",
        meta={"digits": digits, "seed": seed},
    )


def rank_f2(matrix: Any) -> int:
    """Rank of a 0/1 matrix over F₂ (Gaussian elimination modulo 2).

    >>> rank_f2([[1, 1], [1, 1]]), rank_f2([[1, 1], [0, 1]])
    (1, 2)
    """
    a = np.array(matrix, dtype=np.uint8) % 2
    rank = 0
    for col in range(a.shape[1]):
        pivots = np.flatnonzero(a[rank:, col]) + rank
        if pivots.size == 0:
            continue
        a[[rank, pivots[0]]] = a[[pivots[0], rank]]
        others = np.flatnonzero(a[:, col])
        others = others[others != rank]
        a[others] ^= a[rank]
        rank += 1
        if rank == a.shape[0]:
            break
    return rank


def inverse_f2(matrix: Any) -> np.ndarray:
    """Inverse of a square 0/1 matrix over F₂ (``ValueError`` when it is singular).

    >>> inverse_f2([[1, 1], [0, 1]]).tolist()
    [[1, 1], [0, 1]]
    """
    a = np.array(matrix, dtype=np.uint8) % 2
    n = a.shape[0]
    if a.ndim != 2 or a.shape[1] != n:
        raise ValueError(f"`matrix` must be square, got shape {a.shape}.")
    aug = np.concatenate([a, np.eye(n, dtype=np.uint8)], axis=1)
    for col in range(n):
        pivots = np.flatnonzero(aug[col:, col]) + col
        if pivots.size == 0:
            raise ValueError("`matrix` is singular over F2.")
        aug[[col, pivots[0]]] = aug[[pivots[0], col]]
        others = np.flatnonzero(aug[:, col])
        others = others[others != col]
        aug[others] ^= aug[col]
    return aug[:, n:]


def sparse_invertible_f2(dim: int, nonzeros: int, seed: int = 0, *, max_tries: int = 10_000) -> np.ndarray:
    """A random invertible ``dim × dim`` matrix over F₂ with the identity plus ``nonzeros`` off-diagonal ones.

    Off-diagonal positions are drawn uniformly without replacement, redrawn until the matrix is invertible.
    """
    dim = check_positive_int("dim", dim)
    nonzeros = check_positive_int("nonzeros", nonzeros, minimum=0)
    if nonzeros > dim * (dim - 1):
        raise ValueError(f"`nonzeros` must be at most dim*(dim-1) = {dim * (dim - 1)}, got {nonzeros}.")
    rng = np.random.default_rng(seed)
    off = np.flatnonzero(~np.eye(dim, dtype=bool))
    for _ in range(max_tries):
        a = np.eye(dim, dtype=np.uint8)
        a.flat[rng.choice(off, size=nonzeros, replace=False)] = 1
        if rank_f2(a) == dim:
            return a
    raise ValueError(f"no invertible {dim}x{dim} matrix with {nonzeros} off-diagonal ones found in {max_tries} draws.")


def linear_language(
    num_sequences: int = 4000, *, dim: int = 12, nonzeros: int = 12, swap: bool = False, seed: int = 0
) -> Dataset:
    """``x : y`` over F₂, ``y = M x`` with ``M = A`` (or ``A⁻¹`` when ``swap``) for a sparse invertible ``A``.

    ``A`` is :func:`sparse_invertible_f2` (the identity plus ``nonzeros`` off-diagonal ones); ``x`` is drawn
    uniformly among the ``2**dim`` vectors, without replacement. Sequences have length ``2 * dim + 1``.
    ``meta`` holds ``A``, its inverse and the map used, with the number of non-zeros of each.

    Args:
        num_sequences: how many sequences, at most ``2**dim``.
        dim: length of ``x`` and ``y`` (1 to 30).
        nonzeros: off-diagonal ones of ``A`` (its sparsity).
        swap: write ``x : A⁻¹ x``, so that the forward model faces the dense map: the sign flips.
        seed: NumPy seed of ``A`` and of the draw of ``x``.
    """
    num_sequences = check_positive_int("num_sequences", num_sequences)
    dim = check_positive_int("dim", dim)
    if dim > 30:
        raise ValueError(f"`dim` must be at most 30, got {dim}.")
    if num_sequences > 2**dim:
        raise ValueError(f"`num_sequences` must be at most 2**dim = {2**dim}, got {num_sequences}.")
    if not isinstance(swap, bool):
        raise ValueError(f"`swap` must be a bool, got {swap!r}.")
    a = sparse_invertible_f2(dim, nonzeros, seed)
    a_inv = inverse_f2(a)
    m = a_inv if swap else a
    rng = np.random.default_rng(seed + 1)
    codes = rng.choice(2**dim, size=num_sequences, replace=False)
    x = ((codes[:, None] >> np.arange(dim - 1, -1, -1)) & 1).astype(np.int64)
    y = (x @ m.T.astype(np.int64)) % 2
    seqs = np.concatenate([x, np.full((num_sequences, 1), 2), y], axis=1).astype(np.int32)
    dense = "A⁻¹" if swap else "A"
    return Dataset(
        "linear-swapped" if swap else "linear",
        seqs,
        LINEAR_TOKENS,
        expected_sign=-1 if swap else 1,
        description=f"F2 linear map y = {dense} x, dim {dim}, A with {int(a.sum())} non-zeros",
        meta={
            "dim": dim,
            "nonzeros": nonzeros,
            "swap": swap,
            "seed": seed,
            "A": a,
            "A_inverse": a_inv,
            "map": m,
            "nonzeros_forward": int(m.sum()),
            "nonzeros_backward": int((a if swap else a_inv).sum()),
        },
    )


def exchangeable(
    num_sequences: int = 4000, *, length: int = 16, vocab_size: int = 8, concentration: float = 0.5, seed: int = 0
) -> Dataset:
    """Sequences i.i.d. given a per-sequence distribution ``p ~ Dirichlet(concentration)`` over the alphabet.

    The law of a sequence is invariant under every permutation of positions, so for every permutation the
    forward and permuted data have the same law and the gap is zero up to noise (the sign control).
    """
    num_sequences = check_positive_int("num_sequences", num_sequences)
    length = check_positive_int("length", length)
    vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
    if not concentration > 0:
        raise ValueError(f"`concentration` must be > 0, got {concentration!r}.")
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab_size, float(concentration)), size=num_sequences)
    u = rng.random((num_sequences, length, 1))
    seqs = np.minimum((u > np.cumsum(p, axis=1)[:, None, :]).sum(axis=2), vocab_size - 1)
    return _control("exchangeable", "exchangeable control", seqs, vocab_size, seed, concentration=concentration)


def palindromes(num_sequences: int = 4000, *, length: int = 16, vocab_size: int = 8, seed: int = 0) -> Dataset:
    """Uniformly random palindromes: the reversed data equal the data, so the twins train identically."""
    num_sequences = check_positive_int("num_sequences", num_sequences)
    length = check_positive_int("length", length)
    vocab_size = check_positive_int("vocab_size", vocab_size, minimum=2)
    rng = np.random.default_rng(seed)
    half = rng.integers(0, vocab_size, size=(num_sequences, (length + 1) // 2))
    seqs = np.concatenate([half, half[:, : length // 2][:, ::-1]], axis=1)
    return _control("palindromes", "palindromes", seqs, vocab_size, seed)


def _control(name: str, what: str, seqs: np.ndarray, vocab_size: int, seed: int, **meta: Any) -> Dataset:
    """A control's :class:`Dataset`: letters as tokens, no gap expected."""
    length = seqs.shape[1]
    return Dataset(
        name,
        seqs.astype(np.int32),
        tuple(chr(ord("a") + i) if i < 26 else f"<{i}>" for i in range(vocab_size)),
        expected_sign=0,
        description=f"{what}, V={vocab_size}, T={length}",
        meta={"length": length, "vocab_size": vocab_size, "seed": seed, **meta},
    )


__all__ = [
    "LINEAR_TOKENS",
    "PRODUCT_TOKENS",
    "Dataset",
    "exchangeable",
    "inverse_f2",
    "linear_language",
    "palindromes",
    "prime_products",
    "primes_below",
    "rank_f2",
    "sparse_invertible_f2",
]
