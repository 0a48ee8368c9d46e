"""The arrow-of-time learnability gap (``epjax.aot``): generators, reorderings, twins, intervals, signs, CLI.

Oracles: brute force for the generators (trial division for primes, enumeration of F₂ vectors for invertibility,
the products recomputed from the digits); :func:`epjax.train.train` for the vectorised twins' loop; palindromic
data for the pairing (backward data equal to the forward data must give identical twins and ∂ = 0 exactly).
The sign checks train small models on the synthetic languages: each asserts the interval, not a point.
"""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_cli

import epjax
from epjax import aot, families, rnn, train
from epjax.aot import corpus, datasets
from epjax.experiments import arrow_of_time as study

FAST = train.TrainConfig(steps=1500, batch_size=128, learning_rate=0.01, warmup_steps=100, eval_every=500)


# --- generators ---------------------------------------------------------------------------------------------


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def test_primes_below_match_trial_division():
    assert datasets.primes_below(1000).tolist() == [n for n in range(1000) if _is_prime(n)]
    assert datasets.primes_below(2).tolist() == [] and datasets.primes_below(3).tolist() == [2]


@pytest.mark.parametrize("digits", [1, 2, 3])
def test_every_product_is_right(digits):
    d = datasets.prime_products(num_sequences=min(200, {1: 6, 2: 300, 3: 200}[digits]), digits=digits, seed=3)
    assert d.sequences.shape[1] == 4 * digits + 2 and d.vocab_size == 12
    seen = set()
    for row in d.sequences:
        text = d.decode(row)
        left, n = text.split("=")
        p1, p2 = left.split("×")
        assert len(p1) == len(p2) == digits and len(n) == 2 * digits  # fixed width, zero-padded
        assert _is_prime(int(p1)) and _is_prime(int(p2)) and int(p1) < int(p2)
        assert int(p1) * int(p2) == int(n)
        seen.add(text)
    assert len(seen) == len(d.sequences)  # drawn without replacement


def test_products_refuse_more_pairs_than_exist():
    with pytest.raises(ValueError, match="`num_sequences` must be at most 6"):
        datasets.prime_products(num_sequences=7, digits=1)
    with pytest.raises(ValueError, match="`digits` must be at most 6"):
        datasets.prime_products(num_sequences=7, digits=7)


def _invertible_by_enumeration(a: np.ndarray) -> bool:
    n = a.shape[0]
    return all(np.any((a @ np.array(x)) % 2) for x in itertools.product((0, 1), repeat=n) if any(x))


def test_f2_rank_and_inverse_against_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = (rng.random((5, 5)) < 0.4).astype(np.uint8)
        invertible = _invertible_by_enumeration(a)
        assert (datasets.rank_f2(a) == 5) == invertible
        if invertible:
            assert np.array_equal((datasets.inverse_f2(a).astype(int) @ a) % 2, np.eye(5, dtype=int))
        else:
            with pytest.raises(ValueError, match="singular"):
                datasets.inverse_f2(a)


@pytest.mark.parametrize("swap", [False, True])
def test_linear_language_is_y_equals_a_x(swap):
    d = datasets.linear_language(num_sequences=200, dim=8, nonzeros=9, swap=swap, seed=4)
    a, m = d.meta["A"], d.meta["map"]
    assert _invertible_by_enumeration(a) and int(a.sum()) == 8 + 9 and np.all(np.diag(a) == 1)
    assert np.array_equal(m, d.meta["A_inverse"] if swap else a)
    x, sep, y = d.sequences[:, :8], d.sequences[:, 8], d.sequences[:, 9:]
    assert np.all(sep == 2)
    assert np.array_equal(y, (x @ m.T.astype(int)) % 2)
    assert len({tuple(r) for r in x}) == 200  # distinct inputs
    assert d.expected_sign == (-1 if swap else 1)
    # the same A in both versions: the swapped language is the unswapped one with x and y exchanged
    other = datasets.linear_language(num_sequences=200, dim=8, nonzeros=9, swap=not swap, seed=4)
    assert np.array_equal(other.meta["A"], a)


def test_controls():
    e = datasets.exchangeable(num_sequences=500, length=10, vocab_size=5, seed=1)
    assert e.sequences.shape == (500, 10) and e.sequences.min() >= 0 and e.sequences.max() <= 4
    p = datasets.palindromes(num_sequences=50, length=7, vocab_size=3)
    assert np.array_equal(p.sequences, p.sequences[:, ::-1])


def test_pydoc_corpus_splits_by_topic_and_decodes():
    topics = corpus.pydoc_topics()
    for kind in corpus.CORPUS_KINDS:
        c = corpus.pydoc_corpus(kind)
        held_text = "".join(text for i, (_, text) in enumerate(topics) if i % 10 == 0)
        assert c.decode(c.held_out_ids) == held_text  # lossless, and exactly the held-out topics
        tr, ho = c.windows(32)
        assert tr.shape[1] == ho.shape[1] == 32 and np.array_equal(ho.reshape(-1), c.held_out_ids[: ho.size])
    with pytest.raises(ValueError, match="`kind` must be one of"):
        corpus.pydoc_corpus("words")


# --- reorderings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["reverse", "middle-out", "even-odd", "chunks:3", "identity"])
@pytest.mark.parametrize("length", [1, 2, 7, 10])
def test_named_reorderings_are_permutations(spec, length):
    perm = aot.reordering(spec, length, seed=2)
    assert sorted(perm.tolist()) == list(range(length))
    x = jnp.arange(100, 100 + length)
    y = aot.permutation_reversal(perm)(x)
    assert np.array_equal(np.asarray(y)[np.argsort(perm)], np.asarray(x))  # a bijection: the inverse undoes it


def test_chunks_keep_order_inside_blocks_and_reverse_matches_the_engine():
    for seed in range(5):
        perm, i, starts = aot.reordering("chunks:4", 10, seed=seed).tolist(), 0, []
        while i < 10:  # each block appears whole and in its own order: 0-3, 4-7 and the short tail 8-9
            start = perm[i]
            block = list(range(start, min(start + 4, 10)))
            assert start % 4 == 0 and perm[i : i + len(block)] == block
            starts.append(start)
            i += len(block)
        assert sorted(starts) == [0, 4, 8]
    x = jnp.arange(9)
    assert np.array_equal(aot.permutation_reversal(aot.reordering("reverse", 9))(x), epjax.reverse_tokens(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_permutation_reversal_inside_jit_vmap_and_grad(dtype):
    perm = aot.reordering("middle-out", 6)
    reorder = aot.permutation_reversal(perm)
    with jax.enable_x64(dtype == "float64"):
        x = jnp.arange(12.0, dtype=dtype).reshape(2, 6)
        y = jax.jit(jax.vmap(reorder))(x)
        assert y.dtype == x.dtype and np.array_equal(np.asarray(y), np.asarray(x)[:, perm])
        w = jnp.linspace(0.5, 3.0, 6, dtype=dtype)
        grad = jax.grad(lambda v: jnp.sum(w * reorder(v)))(x[0])
        np.testing.assert_array_equal(np.asarray(grad)[perm], np.asarray(w))  # the gradient is w put back in place
        # σ of a model under the reordering, inside the user's jit: ln P(x) − ln P(x[π])
        model = families.new_model("markov", 3)
        params = model.init(jax.random.key(0))
        tokens = jnp.array([0, 1, 2, 2, 1, 0])
        got = jax.jit(lambda p: epjax.sigma(model, p, tokens, reversal=reorder))(params)
        want = jnp.sum(model.log_probs(params, tokens)) - jnp.sum(model.log_probs(params, tokens[perm]))
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-12)
    with pytest.raises(ValueError, match="applies to sequences of 6 steps"):
        reorder(jnp.arange(5))


@pytest.mark.parametrize(
    ("perm", "match"),
    [
        ([0, 0, 1], r"exactly once; missing \[2\], repeated \[0\]"),
        ([0, 1, 3], r"out of range \[3\]"),
        ([0, 1], "1-D array of 3 positions"),
        ([0.0, 1.0, 2.0], "integer positions"),
        ("sideways", "unknown reordering 'sideways'"),
        ("chunks:x", "block length L >= 1"),
    ],
)
def test_a_permutation_that_is_not_one_is_refused(perm, match):
    with pytest.raises(ValueError, match=match):
        aot.reordering(perm, 3)


# --- the vectorised loop -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_train_many_ends_where_train_ends(strategy):
    with jax.enable_x64(True):
        model = rnn.Model(rnn.Config(5, hidden_size=8, num_layers=1, cell="gru", dtype="float64"))
        rng = np.random.default_rng(0)
        data, held = rng.integers(0, 5, (3, 40, 6)), rng.integers(0, 5, (3, 8, 6))
        config = train.TrainConfig(steps=25, batch_size=8, eval_every=10)
        keys = jax.random.split(jax.random.key(1), 3)
        inits = [model.init(jax.random.key(i)) for i in range(3)]
        stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *inits)
        params, history = train.train_many(keys, model, stacked, data, config=config, eval_data=held, strategy=strategy)
        assert history.train_loss.shape == (3, 25) and history.eval_loss.shape == (3, 3)
        for i in range(3):
            alone, h = train.train(keys[i], model, inits[i], data[i], config=config, eval_data=held[i])
            for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(alone), strict=True):
                np.testing.assert_allclose(a[i], b, rtol=0, atol=1e-12)
            np.testing.assert_allclose(history.train_loss[i], h.train_loss, rtol=1e-12)
            np.testing.assert_allclose(history.eval_loss[i], h.eval_loss, rtol=1e-12)


def test_train_many_refuses_mismatched_stacks():
    model = families.new_model("markov", 3)
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 2))
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"`data` must be integer sequences \[M, N, T\] with M = 2"):
        train.train_many(keys, model, params, np.zeros((3, 5, 4), int))
    with pytest.raises(ValueError, match="stacked along a leading axis of length 3"):
        train.train_many(jax.random.split(jax.random.key(0), 3), model, params, np.zeros((3, 5, 4), int))
    with pytest.raises(ValueError, match="`keys` must be a 1-D array of jax.random keys"):
        train.train_many(np.zeros(2), model, params, np.zeros((2, 5, 4), int))
    with pytest.raises(ValueError, match="`labels` must name each of the 2 models, got 1 labels"):
        train.train_many(keys, model, params, np.zeros((2, 5, 4), int), labels=["FW1"])
    with pytest.raises(ValueError, match="`strategy` must be 'auto', 'vmap' or 'map', got 'pmap'"):
        train.train_many(keys, model, params, np.zeros((2, 5, 4), int), strategy="pmap")


# --- the gap ---------------------------------------------------------------------------------------------------


def _gap(data, *, model=None, seeds=3, config=FAST, **kw):
    model = model or families.new_model("rnn", int(np.max(data)) + 1, size="small", cell="gru")
    return aot.learnability_gap(jax.random.key(0), model, data, num_seeds=seeds, config=config, **kw)


def test_palindromes_give_identical_twins_and_a_zero_gap():
    # Reversed palindromes are the same rows: identical twins prove the pairing (same init, batches, held-out).
    d = datasets.palindromes(num_sequences=300, length=8, vocab_size=4)
    g = _gap(d.sequences, config=train.TrainConfig(steps=30, batch_size=16, eval_every=10))
    assert g.gap == 0.0 and np.all(g.seed_gaps == 0.0)
    np.testing.assert_array_equal(g.forward_history.eval_loss, g.backward_history.eval_loss)
    np.testing.assert_array_equal(g.forward_sequence_loss, g.backward_sequence_loss)


def test_held_out_rows_are_shared_and_reordered_for_the_backward_twin():
    d = datasets.exchangeable(num_sequences=200, length=6, vocab_size=4)
    g = _gap(d.sequences, seeds=2, config=train.TrainConfig(steps=20, batch_size=16, eval_every=10),
             permutation="even-odd", held_out=0.2)  # fmt: skip
    assert g.held_out.shape == (40, 6) and g.num_train == 160
    rows = {tuple(r) for r in d.sequences}
    assert all(tuple(r) in rows for r in g.held_out)
    for s in range(2):
        fw, bw = g.twins(s)
        np.testing.assert_allclose(g.forward_sequence_loss[s], train.sequence_losses(g.model, fw, g.held_out))
        np.testing.assert_allclose(
            g.backward_sequence_loss[s], train.sequence_losses(g.model, bw, g.held_out[:, g.permutation])
        )
    # the per-seed and pooled gaps follow the definition
    f, b = g.forward_loss, g.backward_loss
    np.testing.assert_allclose(g.seed_gaps, (b - f) / (0.5 * (b + f)))
    assert g.gap == pytest.approx((b.mean() - f.mean()) / (0.5 * (b.mean() + f.mean())), rel=1e-12)
    assert g.interval[0] < g.gap < g.interval[1]


def test_prime_products_give_a_positive_gap():
    d = datasets.prime_products(num_sequences=8000, digits=3, seed=0)
    g = _gap(d.sequences)
    assert g.interval[0] > 0, (g.gap, g.interval)  # forward (multiplying) is easier than backward (factoring)
    assert g.sign() == 1


@pytest.mark.slow
def test_swapping_the_linear_language_flips_the_sign():
    # y = A x with A sparse (22 non-zeros) is easier forwards; x : A⁻¹ x (A⁻¹: 32 non-zeros) is easier backwards.
    # Seeds matter: a seed's gap varies by about 0.08 (sd) around +0.07 (plain) and -0.08 (swapped), so three
    # seeds resolve the flip only by luck (2.5 SE with six seeds on 2026-12-03); twelve give it the power to pass
    # the 3-SE test reliably, at about 4 minutes on 2 cores, hence slow. Fewer training steps lose the effect
    # (1000 steps: gap 0.02 ± 0.02). The default run keeps the other gap tests (signs, intervals, controls).
    model = families.new_model("rnn", 3, size="small", width=64, cell="gru")
    config = train.TrainConfig(steps=2000, batch_size=128, learning_rate=0.01, warmup_steps=100, eval_every=1000)
    gaps = {}
    for swap in (False, True):
        d = datasets.linear_language(num_sequences=1024, dim=10, nonzeros=12, swap=swap, seed=0)
        gaps[swap] = _gap(d.sequences, model=model, config=config, seeds=12)
    plain, swapped = gaps[False], gaps[True]
    assert plain.gap > 0 > swapped.gap, (plain.gap, swapped.gap)
    # the flip is resolved: the difference of the two gaps is beyond three combined standard errors
    assert plain.gap - swapped.gap > 3 * np.hypot(plain.stderr, swapped.stderr), (plain.interval, swapped.interval)


def test_exchangeable_control_interval_covers_zero():
    d = datasets.exchangeable(num_sequences=4000, length=12, vocab_size=6, seed=0)
    g = _gap(d.sequences, config=train.TrainConfig(steps=800, batch_size=128, learning_rate=0.01, eval_every=400))
    assert g.interval[0] < 0 < g.interval[1], (g.gap, g.interval)
    assert g.sign() == 0


def test_interval_shrinks_with_more_seeds():
    d = datasets.exchangeable(num_sequences=1000, length=8, vocab_size=4, seed=2)
    config = train.TrainConfig(steps=150, batch_size=64, learning_rate=0.01, eval_every=150)
    few, many = _gap(d.sequences, seeds=2, config=config), _gap(d.sequences, seeds=6, config=config)
    width = lambda g: g.interval[1] - g.interval[0]  # noqa: E731
    assert width(many) < width(few)
    assert many.seed_interval[1] - many.seed_interval[0] < few.seed_interval[1] - few.seed_interval[0]
    # one seed: only the held-out interval, said so by the missing seed interval
    one = _gap(d.sequences, seeds=1, config=config)
    assert one.seed_interval is None and one.interval == one.held_out_interval


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"permutation": [0, 1, 1, 2, 3, 4, 5, 6]}, "`permutation` must hold each position"),
        ({"held_out": 1.5}, r"`held_out` as a fraction must be in \(0, 1\)"),
        ({"held_out": 0}, "must leave at least one training and one held-out sequence"),
        ({"num_seeds": 0}, "`num_seeds` must be an integer >= 1"),
        ({"confidence": 1.0}, r"`confidence` must be in \(0, 1\)"),
        ({"held_out": np.zeros((4, 5), int)}, "must have the training length 8"),
    ],
)
def test_bad_gap_arguments_are_refused(kwargs, match):
    d = datasets.palindromes(num_sequences=20, length=8, vocab_size=3)
    model = families.new_model("markov", 3)
    with pytest.raises(ValueError, match=match):
        aot.learnability_gap(jax.random.key(0), model, d.sequences, **kwargs)


def test_data_outside_the_vocabulary_is_refused():
    with pytest.raises(ValueError, match=r"token ids in \[0, 3\), got values in \[0, 5\]"):
        aot.learnability_gap(jax.random.key(0), families.new_model("markov", 3), np.array([[0, 5], [1, 2]]))


def test_ep_beside_the_gap_and_the_backward_twin_as_retrodiction():
    # A Markov chain fitted to irreversible chain data: its EP is large while its twins learn equally well.
    chain = epjax.experiments.markov_training.make_chain()
    data = epjax.experiments.markov_training.sample_sequences(jax.random.key(3), chain, 2000, 8)
    model = families.new_model("markov", 4)
    config = train.TrainConfig(steps=400, batch_size=128, learning_rate=0.05, eval_every=200)
    g = aot.learnability_gap(jax.random.key(1), model, data, num_seeds=2, config=config)
    ep = aot.forward_entropy_production(jax.random.key(2), g, num_samples=2000)
    exact = chain.ep_rate * 7  # stationary chain: (T - 1) transitions
    assert abs(ep.mean - exact) < 0.25 * exact  # the fitted chain's EP is close to the data chain's
    assert ep.mean > 10 * abs(g.gap) * g.forward_loss.mean() * 8  # large EP, no comparable gap
    est = aot.retrodiction_estimate(jax.random.key(4), g, num_samples=500)
    assert est.total + est.bias == pytest.approx(ep.mean, abs=6 * (est.total_stderr + est.bias_stderr + ep.stderr))
    with pytest.raises(ValueError, match="token-reversed"):
        gm = aot.learnability_gap(jax.random.key(1), model, data[:200, :6], num_seeds=1, permutation="even-odd",
                                  config=train.TrainConfig(steps=5, batch_size=8, eval_every=5))  # fmt: skip
        aot.retrodiction_estimate(jax.random.key(4), gm, num_samples=10)


# --- the experiment and the command line ---------------------------------------------------------------------


def test_make_data_and_sweeps():
    data, held, info = study.make_data("pydoc-chars", context_length=16, num_sequences=50)
    assert data.shape == (50, 16) and held.shape[1] == 16 and info["vocab_size"] > 50
    settings = study.sweep_settings(study.Setting(dataset="linear"), "sparsity", ["0", "5"])
    assert [s.sparsity for s in settings] == [0, 5]
    with pytest.raises(study.AotDataError, match="non-negative integers"):
        study.sweep_settings(study.Setting(), "context", ["x"])
    with pytest.raises(study.AotDataError, match="`dataset` must be one of"):
        study.make_data("poems")


def test_cli_aot_writes_table_json_csv_and_plot(tmp_path):
    files = {"json": tmp_path / "a.json", "csv": tmp_path / "a.csv", "plot": tmp_path / "a.png"}
    code, out, err = run_cli(
        "aot", "--dataset", "linear", "--dim", 6, "--sparsity", 3, "--sequences", 64, "--steps", 20,
        "--seeds", 2, "--sweep", "permutation", "--values", "reverse,even-odd", "--ep", 50, "--no-progress",
        "--json", files["json"], "--csv", files["csv"], "--plot", files["plot"],
    )  # fmt: skip
    assert code == 0, err
    assert "Arrow-of-time learnability gap" in out and "permutation even-odd" in out
    report = json.loads(files["json"].read_text())
    assert report["command"] == "aot" and report["provenance"]["seed"] == 0
    rows = report["settings"]
    assert [r["setting"]["permutation"] for r in rows] == ["reverse", "even-odd"]
    assert rows[1]["permutation"] == aot.reordering("even-odd", 13).tolist()
    for r in rows:
        f, b = np.mean(r["loss_fw"]), np.mean(r["loss_bw"])
        assert r["gap"] == pytest.approx((b - f) / (0.5 * (b + f)), rel=1e-9)
        assert r["interval"][0] <= r["gap"] <= r["interval"][1] and r["ep"]["num_samples"] == 50
    assert files["csv"].read_text().splitlines()[0].startswith("dataset,architecture")
    assert files["plot"].stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--values", "1,2"], "--values needs --sweep"),
        (["--sweep", "context"], "--sweep context needs --values"),
        (["--size", "huge"], "--size 'huge' is not tiny, small, medium or a width"),
        (["--permutation", "sideways"], "--permutation: unknown reordering 'sideways'"),
        (["--sweep", "sparsity", "--values", "a"], "sparsity values must be non-negative integers"),
    ],
)
def test_cli_aot_refuses_bad_options(args, match):
    code, _, err = run_cli("aot", "--steps", 2, "--sequences", 20, "--no-progress", *args)
    assert code == 2 and match in err, err


def test_cli_aot_reads_a_sequence_file(tmp_path):
    path = tmp_path / "seqs.txt"
    rows = datasets.palindromes(40, length=6, vocab_size=3).sequences
    path.write_text("\n".join(" ".join(map(str, r)) for r in rows))
    code, out, err = run_cli("aot", "--data", path, "--architecture", "markov", "--steps", 5, "--seeds", 2,
                             "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "+0.00" in out  # palindromes: identical twins
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n3\n")
    code, _, err = run_cli("aot", "--data", bad, "--no-progress")
    assert code == 2 and "--data" in err and "line 2 has 1 tokens" in err
