"""Many text sets under many models (epjax.experiments.texts.compare_text_sets, ``epjax texts`` with several).

Oracles: Holm's adjustment computed by hand; the rank-biserial interval against a direct
:func:`scipy.stats.bootstrap` call with an independently written statistic (the mean sign of the pairwise
differences); Tukey's fences and the shared texts of constructed cases worked out by hand; each model's
per-text sigma against :func:`epjax.text.score_texts` on that text alone (float64); the statistics of the run
against :mod:`epjax.stats` on the run's own per-text rates.
"""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest
import scipy.stats
from helpers import run_cli

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from test_pretrained import train_tokenizer, write_llama_gguf  # noqa: E402

from epjax import pretrained, stats  # noqa: E402
from epjax import text as text_lib  # noqa: E402
from epjax.experiments import texts  # noqa: E402

# Set A (epjax's layout) and set B (a list of records). Shared between them after white-space normalisation:
# the cat text (B has a double space) and the door text. "It rained. The dog ran." is in both groups of B only:
# not shared (one set).
CAT = "The cat sat on the mat. Then it was happy."
DOOR = "She opened the door. The rain had stopped!"
RAIN = "It rained. The dog ran."
SET_A = {
    "causal": ["The cat sat on the mat. It was happy! Was it? Yes.", "Water boils at 100 degrees. Then it turns into "
               "steam.", CAT],
    "facts": [DOOR, "Numbers are famous. Are they? Of course.", "Paris is a city. Water boils."],
}  # fmt: skip
SET_B = {
    "x": [CAT.replace(". ", ".  "), RAIN, DOOR],
    "y": ["Paris is a city.", "Water boils. Then it turns into steam.", RAIN],
}
SHARED = {("A", "causal", 2), ("A", "facts", 0), ("B", "x", 0), ("B", "x", 2)}


# --- statistics ---------------------------------------------------------------------------------------------


def test_holm_hand_computed():
    # m = 5, sorted 0.005, 0.01, 0.03, 0.04, 0.2 -> 5*0.005, 4*0.01, 3*0.03, max(2*0.04, previous), 1*0.2.
    got = stats.holm([0.01, 0.04, 0.03, 0.005, 0.2])
    np.testing.assert_allclose(got, [0.04, 0.09, 0.09, 0.025, 0.2], rtol=1e-15)
    # Capped at 1, and monotone: 3*0.3 = 0.9, 2*0.5 = 1.0, min(1, 0.6) -> max(1.0, 0.6).
    np.testing.assert_allclose(stats.holm([0.3, 0.5, 0.6]), [0.9, 1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(stats.holm([0.5, 0.4]), [0.8, 0.8], rtol=1e-15)  # 2*0.4, max(0.8, 0.5)
    np.testing.assert_allclose(stats.holm([0.02, 0.02]), [0.04, 0.04], rtol=1e-15)  # ties
    assert stats.holm([0.7]).tolist() == [0.7] and stats.holm([]).size == 0
    with pytest.raises(ValueError, match=r"`p_values` must hold p-values in \[0, 1\], got 1.5 at index 1"):
        stats.holm([0.1, 1.5])
    with pytest.raises(ValueError, match="`p_values` must be a 1-D array"):
        stats.holm([[0.1, 0.2]])


@pytest.mark.parametrize("ties", [False, True])
def test_rank_biserial_interval_is_scipy_bootstrap(ties):
    rng = np.random.default_rng(4)
    x, y = rng.normal(0.4, 1, size=9), rng.normal(0, 1, size=12)
    if ties:
        x, y = np.round(x), np.round(y)

    def mean_sign(a, b, axis=-1):  # r = P(a > b) - P(a < b) over all pairs
        a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
        return np.sign(a[..., :, None] - b[..., None, :]).mean(axis=(-2, -1))

    rng = np.random.default_rng(11)
    direct = scipy.stats.bootstrap((x, y), mean_sign, paired=False, vectorized=True, n_resamples=999,
                                   confidence_level=0.9, method="percentile", rng=rng)  # fmt: skip
    ours = stats.rank_biserial_ci(x, y, confidence=0.9, num_resamples=999, seed=11)
    np.testing.assert_allclose([ours.low, ours.high], direct.confidence_interval, rtol=0, atol=1e-12)
    assert ours.estimate == pytest.approx(stats.mann_whitney_u(x, y).rank_biserial, abs=1e-12)
    assert ours.low < ours.estimate < ours.high
    other = stats.rank_biserial_ci(x, y, confidence=0.9, num_resamples=999, seed=12)
    assert (other.low, other.high) != (ours.low, ours.high)  # the seed is used


def test_tukey_fences_hand_computed():
    # Sorted -5, 10, 11, 12, 13, 14, 30: Q1 = 10.5, Q3 = 13.5 (linear interpolation), fences [6, 18].
    assert stats.tukey_inliers([10, 11, 12, 13, 14, 30, -5]).tolist() == [True] * 5 + [False, False]
    # Zero IQR: the fences are [0, 0].
    assert stats.tukey_inliers([0, 0, 0, 0, 1]).tolist() == [True] * 4 + [False]
    assert stats.tukey_inliers([1.0, 2.0, 3.0]).all()


def _records(rates: dict[str, tuple[list[float], list[float]]], shared: set[tuple[str, int]] = frozenset()):
    return [
        {"set": "s", "model": "m", "group": g, "index": i, "rate_token": tok, "rate_sentence": sen,
         "shared": (g, i) in shared}
        for g, (toks, sens) in rates.items()
        for i, (tok, sen) in enumerate(zip(toks, sens, strict=True))
    ]  # fmt: skip


def test_outliers_removed_per_group_and_level():
    # a, token: sorted 0.1 0.2 0.3 0.4 5.0, Q1 0.2, Q3 0.4, fences [-0.1, 0.7]: 5.0 goes. a, sentence: none.
    # b, sentence: zero IQR, fences [0, 0]: the 1.0 goes. b, token: none.
    records = _records({"a": ([0.1, 0.2, 5.0, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0, 5.0]),
                        "b": ([-1.0, -0.9, -0.8, -0.7, -0.6], [0.0, 0.0, 1.0, 0.0, 0.0])})  # fmt: skip
    token, sentence = texts.set_tests(records, num_bootstrap=200)
    assert [r["outlier_token"] for r in records] == [False, False, True] + [False] * 7
    assert [r["outlier_sentence"] for r in records] == [False] * 7 + [True, False, False]
    assert (token["outliers_removed_n1"], token["outliers_removed_n2"]) == (4, 5)
    assert (sentence["outliers_removed_n1"], sentence["outliers_removed_n2"]) == (5, 4)
    kept = stats.mann_whitney_u([0.1, 0.2, 0.3, 0.4], [-1.0, -0.9, -0.8, -0.7, -0.6])
    assert (token["outliers_removed_p"], token["outliers_removed_r"]) == (kept.p_value, kept.rank_biserial)
    kept = stats.mann_whitney_u([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0])
    assert (sentence["outliers_removed_p"], sentence["outliers_removed_r"]) == (kept.p_value, kept.rank_biserial)
    assert (token["n1"], token["n2"], token["shared_removed_n1"]) == (5, 5, 5)  # nothing shared


def test_shared_texts_removed_from_every_set():
    sets = {
        "s1": {"a": ["The cat.", "A  dog\nran."], "b": ["X.", "Y."]},
        "s2": {"a": [" A dog ran. ", "Z."], "b": ["the cat.", "X ."]},  # case and inner spaces differ: kept
        "s3": {"a": ["Q.", "Q."], "b": ["R.", "Q."]},  # repeated within one set only: kept
    }
    assert texts.shared_texts(sets) == {"A dog ran."}
    assert texts.normalise_whitespace(" A  dog\n\tran. ") == "A dog ran."
    # In the tests: the shared texts leave every set, and only those.
    records = _records({"a": ([0.1, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4]), "b": ([0.0, -0.1, -0.2], [0.0] * 3)},
                       shared={("a", 1), ("b", 2)})  # fmt: skip
    token, _ = texts.set_tests(records, num_bootstrap=200)
    assert (token["shared_removed_n1"], token["shared_removed_n2"]) == (3, 2)
    kept = stats.mann_whitney_u([0.1, 0.3, 0.5], [0.0, -0.1])
    assert (token["shared_removed_p"], token["shared_removed_r"]) == (kept.p_value, kept.rank_biserial)
    with pytest.raises(ValueError, match=r"`records\[0\]` must have the keys .* it lacks shared"):
        texts.set_tests([{k: v for k, v in records[0].items() if k != "shared"}])


# --- the JSON layouts ---------------------------------------------------------------------------------------

WANT = {"causal": ["A.", "B."], "non_causal": ["C.", "D."]}
RECORDS = [{"text": "A.", "label": "causal"}, {"text": "C.", "label": "non_causal"},
           {"text": "B.", "label": "causal"}, {"text": "D.", "label": "non_causal"}]  # fmt: skip


@pytest.mark.parametrize(
    "content",
    [
        {"description": "ignored", "groups": WANT},
        WANT,
        RECORDS,
        [{"text": r["text"], "category": r["label"], "source": "x"} for r in RECORDS],
        {"texts": [{"text": r["text"], "type": r["label"]} for r in RECORDS], "licence": "ignored"},
        # "label" is looked for before "group": the first key every record holds decides.
        [{"text": r["text"], "group": "ignored", "label": r["label"]} for r in RECORDS],
    ],
)
def test_layouts_read(tmp_path, content):
    file = tmp_path / "set.json"
    file.write_text(json.dumps(content))
    got = texts.load_text_groups(file)
    assert got.groups == WANT and list(got.groups) == ["causal", "non_causal"]
    assert (got.source, got.path) == (str(file), file)


def test_integer_labels_become_names(tmp_path):
    file = tmp_path / "set.json"
    file.write_text(json.dumps([{"text": t, "label": k % 2} for k, t in enumerate(["A.", "B.", "C.", "D."])]))
    assert texts.load_text_groups(file).groups == {"0": ["A.", "C."], "1": ["B.", "D."]}


LAYOUT_LIST = 'expected a JSON object {"groups"'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("3", LAYOUT_LIST + '.*; or a list of records .*; got a JSON int[.]$'),
        ('"text"', LAYOUT_LIST + ".*got a string[.]$"),
        ('["a", "b"]', LAYOUT_LIST + ".*got a string as record 0[.]$"),
        ("[]", LAYOUT_LIST + ".*got an empty list of records[.]$"),
        ('{"a": "x", "b": ["y."]}', LAYOUT_LIST + r".*got an object \{'a': a string, 'b': a list\}[.]$"),
        ('{"groups": ["a."]}', LAYOUT_LIST + '.*got "groups" holding a list[.]$'),
        ('{"texts": "a."}', LAYOUT_LIST + r".*got an object \{'texts': a string\}[.]$"),
        ('[{"text": "a.", "label": "x"}, {"text": "b.", "group": "y"}]',
         "every record must name its group under the same key, one of 'label', 'group', 'category', 'type'; no key "
         "is in all 2 records"),
        ('[{"text": "a.", "label": ["x"]}]',
         r"record 0: the group 'label' must be a string or an integer, got \['x'\]"),
        ('[{"text": 1, "label": "x"}]', 'record 0 must hold its text as a string under "text"'),
        ('[{"text": "a.", "label": "x"}, {"text": "b.", "label": "x"}]',
         r"exactly two groups to compare, got 1 \('x'\)"),
        ('{"a": ["x."], "b": ["y.", "z."]}', "group 'a' has 1 text"),
        ('{"a": ["x.", " "], "b": ["y.", "z."]}', "group 'a', text 1 is empty"),
        ('{"a": ["x.", "y."], "b": ["y.", "z."], "c": ["w.", "v."]}', "exactly two groups to compare, got 3"),
    ],
)  # fmt: skip
def test_malformed_layouts_refused(tmp_path, content, message):
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        texts.load_text_groups(file)
    assert str(info.value).startswith(f"{file}: ")
    if message.startswith(LAYOUT_LIST):  # the message lists every accepted layout
        assert all(layout in str(info.value) for layout in texts.LAYOUTS)


def test_builtin_text_sets():
    sets = texts.builtin_text_sets()
    assert list(sets) == ["ep-paper", "strict"] and sets["ep-paper"].name == "texts.json"
    paper = texts.load_builtin_text_set("ep-paper")
    default = texts.load_text_groups(None)
    assert paper.groups == default.groups and [len(v) for v in paper.groups.values()] == [30, 30]
    assert (paper.source, paper.path, default.source, default.path) == ("ep-paper", sets["ep-paper"], "--builtin", None)
    if sets["strict"].is_file():  # shipped by another change: its sizes and group names
        strict = texts.load_builtin_text_set("strict")
        assert {k: len(v) for k, v in strict.groups.items()} == {"causal": 100, "non-causal": 100}
    else:
        with pytest.raises(ValueError, match="the builtin text set 'strict' .* is not in this installation"):
            texts.load_builtin_text_set("strict")
    with pytest.raises(ValueError, match="unknown builtin text set 'nope'; expected one of 'ep-paper', 'strict'"):
        texts.load_builtin_text_set("nope")


# --- the run end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_sets")
    bpe = train_tokenizer()
    return write_llama_gguf(folder / "tiny_a.gguf", bpe, seed=3), write_llama_gguf(folder / "tiny_b.gguf", bpe, seed=5)


@pytest.fixture(scope="module")
def set_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_set_files")
    a, b = folder / "A.json", folder / "B.json"
    a.write_text(json.dumps({"groups": SET_A}))
    b.write_text(json.dumps([{"text": t, "label": g} for g, ts in SET_B.items() for t in ts]))
    return a, b


def _place(record, files):
    return ({str(files[0]): "A", str(files[1]): "B"}[record["set"]], record["group"], record["index"])


def test_sets_times_models_end_to_end(two_ggufs, set_files, monkeypatch):
    calls = []
    score_texts = text_lib.score_texts

    def counting(model, params, tok, batch, **kw):
        calls.append(list(batch))
        return score_texts(model, params, tok, batch, **kw)

    monkeypatch.setattr(text_lib, "score_texts", counting)
    sets = [texts.load_text_groups(f) for f in set_files]
    with jax.enable_x64(True):
        lms = [texts.LanguageModel(*pretrained.load_gguf(p, dtype="float64"), p.name, (p,)) for p in two_ggufs]
        result = texts.compare_text_sets(lms, sets, batch_size=4, num_bootstrap=300, seed=5)
        # One call per model, each string once (RAIN is twice in B, CAT differs in its spaces).
        distinct = list(dict.fromkeys([t for g in SET_A.values() for t in g] + [t for g in SET_B.values() for t in g]))
        assert len(distinct) == 10 and calls == [distinct, distinct]
        # Each record's sigma is the model's sigma of that text scored alone.
        for lm in lms:
            for r in (r for r in result.texts if r["model"] == lm.name):
                (alone,) = score_texts(lm.model, lm.params, lm.tokenizer, [r["text"]])
                assert (r["T"], r["sentences"]) == (alone.num_tokens, alone.sentence.num_blocks)
                want = [alone.token.sigma, alone.sentence.sigma]
                np.testing.assert_allclose([r["sigma_token"], r["sigma_sentence"]], want, rtol=1e-10, atol=1e-10)
    assert len(result.texts) == 2 * 12 and {r["model"] for r in result.texts} == {"tiny_a.gguf", "tiny_b.gguf"}
    assert {_place(r, set_files) for r in result.texts if r["shared"]} == SHARED
    # One test per set, model and level; Holm over all 8.
    assert [(t["set"], t["model"], t["level"]) for t in result.tests] == [
        (str(f), p.name, level) for f in set_files for p in two_ggufs for level in ("token", "sentence")
    ]
    assert result.holm_family_size == 8
    np.testing.assert_allclose([t["p_holm"] for t in result.tests], stats.holm([t["p"] for t in result.tests]))
    for t in result.tests:
        cell = [r for r in result.texts if (r["set"], r["model"]) == (t["set"], t["model"])]
        x, y = ([r[f"rate_{t['level']}"] for r in cell if r["group"] == t[g]] for g in ("group_a", "group_b"))
        mw = stats.mann_whitney_u(x, y)
        assert (t["U"], t["p"], t["r"], t["median_a"], t["median_b"]) == (
            mw.u, mw.p_value, mw.rank_biserial, mw.median_x, mw.median_y)  # fmt: skip
        ci = stats.rank_biserial_ci(x, y, num_resamples=300, seed=5)
        assert (t["r_low"], t["r_high"]) == (ci.low, ci.high)
        # Outliers: outside the quartile fences of their own group; the test again without them.
        for g in ("group_a", "group_b"):
            rates = np.array([r[f"rate_{t['level']}"] for r in cell if r["group"] == t[g]])
            q1, q3 = np.quantile(rates, [0.25, 0.75])
            outside = (rates < q1 - 1.5 * (q3 - q1)) | (rates > q3 + 1.5 * (q3 - q1))
            assert [r[f"outlier_{t['level']}"] for r in cell if r["group"] == t[g]] == outside.tolist()
        xs, ys = ([r[f"rate_{t['level']}"] for r in cell if r["group"] == t[g] and not r[f"outlier_{t['level']}"]]
                  for g in ("group_a", "group_b"))  # fmt: skip
        assert (t["outliers_removed_n1"], t["outliers_removed_n2"]) == (len(xs), len(ys))
        assert t["outliers_removed_p"] == stats.mann_whitney_u(xs, ys).p_value
        # Shared texts: A keeps 2 + 2, B keeps 1 + 3 (too few for a test).
        a_set = t["set"] == str(set_files[0])
        assert (t["shared_removed_n1"], t["shared_removed_n2"]) == ((2, 2) if a_set else (1, 3))
        assert (t["shared_removed_p"] is None) is (not a_set) and (t["shared_removed_r"] is None) is (not a_set)
    shared_p = [t["shared_removed_p"] for t in result.tests[:4]]
    assert [t["shared_removed_p_holm"] for t in result.tests[:4]] == stats.holm(shared_p).tolist()
    assert result.inputs == (*two_ggufs, *set_files)
    # The renderings.
    report = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert report["holm_family_size"] == 8 and len(report["tests"]) == 8 and len(report["texts"]) == 24
    assert report["settings"]["bootstrap"] | {"resampling": None} == {
        "method": "percentile", "resampling": None, "num_resamples": 300, "confidence": 0.95, "seed": 5}  # fmt: skip
    assert report["seeds"] == {"bootstrap": 5} and [s["name"] for s in report["sets"]] == list(map(str, set_files))
    assert list(result.csv_header()) == list(texts.TEST_COLUMNS) and len(list(result.csv_rows())) == 8
    assert "Holm-corrected over all 8 tests" in result.table()
    fig = result.plot()
    forest, *boxes = fig.axes
    assert len(boxes) == 2 and len(forest.get_yticklabels()) == 8 and forest.get_legend() is not None
    assert all("nats per token" in ax.get_ylabel() for ax in boxes) and fig.get_suptitle()


def test_compare_text_sets_refusals(two_ggufs):
    lm = texts.load_language_model(two_ggufs[0], context_length=8)
    with pytest.raises(ValueError, match="`sets` must have distinct names, got 'x' more than once"):
        texts.compare_text_sets(lm, [texts.TextGroups("x", SET_A), texts.TextGroups("x", SET_B)])
    with pytest.raises(ValueError, match="`sets`: set 'x' must hold exactly two groups, got 1"):
        texts.compare_text_sets(lm, {"x": {"a": ["A.", "B."]}})
    with pytest.raises(ValueError, match=r"`models\[1\]` must be a LanguageModel"):
        texts.compare_text_sets([lm, "model.gguf"], {"A": SET_A})
    with pytest.raises(ValueError, match="`num_bootstrap` must be an integer >= 1, got 0"):
        texts.compare_text_sets(lm, {"A": SET_A}, num_bootstrap=0)
    with pytest.raises(texts.TextSetsError) as info:  # CAT: 21 tokens, more than 8; named by its first place
        texts.compare_text_sets(lm, {"A": {"a": ["It was.", "The mat."], "b": ["It is.", CAT]}, "B": SET_B})
    assert (info.value.set_name, info.value.group, info.value.index, info.value.model) == ("A", "b", 1, "tiny_a.gguf")
    assert isinstance(info.value.error, text_lib.ContextLengthError)


def test_language_model_from_a_folder(tmp_path):
    pytest.importorskip("transformers")
    from test_pretrained import write_gpt2_checkpoint

    folder = write_gpt2_checkpoint(tmp_path / "my-gpt2", train_tokenizer())
    lm = texts.load_language_model(folder)
    assert lm.name == "my-gpt2" and lm.files == pretrained.model_files(folder)
    assert folder / "model.safetensors" in lm.files and folder / "config.json" in lm.files
    alias = texts.load_language_model(gpt2=folder)
    assert alias.name == lm.name and alias.files == lm.files
    np.testing.assert_array_equal(jax.tree.leaves(alias.params)[0], jax.tree.leaves(lm.params)[0])
    with pytest.raises(ValueError, match="`context_length` applies to a GGUF model"):
        texts.load_language_model(gpt2=folder, context_length=8)
    with pytest.raises(ValueError, match="give either `path` or `gpt2`, not both"):
        texts.load_language_model(folder, gpt2=folder)


# --- the command line ---------------------------------------------------------------------------------------


def test_texts_command_two_models_two_files(tmp_path, two_ggufs, set_files):
    out_json, out_csv, out_png = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = run_cli("texts", *set_files, "--model", two_ggufs[0], "--model", two_ggufs[1],
                             "--bootstrap", 200, "--seed", 3, "--batch-size", 4, "--json", out_json,
                             "--csv", out_csv, "--plot", out_png, "--no-progress")  # fmt: skip
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["holm_family_size"] == 8 and report["provenance"]["seed"] == 3
    assert report["settings"]["bootstrap"]["num_resamples"] == 200 and report["settings"]["bootstrap"]["seed"] == 3
    assert [i["path"] for i in report["provenance"]["inputs"]] == [str(p) for p in (*two_ggufs, *set_files)]
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    assert len(rows) == 8 and list(rows[0]) == list(texts.TEST_COLUMNS)
    np.testing.assert_allclose([float(r["p_holm"]) for r in rows], stats.holm([t["p"] for t in report["tests"]]))
    for t, row in zip(report["tests"], rows, strict=True):
        cell = [r for r in report["texts"] if (r["set"], r["model"]) == (t["set"], t["model"])]
        x, y = ([r[f"rate_{t['level']}"] for r in cell if r["group"] == t[g]] for g in ("group_a", "group_b"))
        ci = stats.rank_biserial_ci(x, y, num_resamples=200, seed=3)
        assert (t["r_low"], t["r_high"]) == (ci.low, ci.high)
        shared_p = "" if row["set"].endswith("B.json") else repr(t["shared_removed_p"])  # B: too few texts
        assert float(row["r_low"]) == ci.low and row["shared_removed_p"] == shared_p
    assert "Holm-corrected over all 8 tests" in out and "tiny_b.gguf" in out
    assert out_png.stat().st_size > 0


def test_texts_command_errors_name_the_option(tmp_path, two_ggufs, set_files):
    gguf = two_ggufs[0]
    code, _, err = run_cli("texts", "--builtin", "nope", "--model", gguf)
    assert code == 2 and "--builtin 'nope': expected one of 'ep-paper', 'strict'." in err
    code, _, err = run_cli("texts", "--builtin", set_files[0], "--model", gguf)
    assert code == 2 and "put the FILEs first" in err
    code, _, err = run_cli("texts", "--builtin", "--builtin", "ep-paper", "--model", gguf)
    assert code == 2 and "FILE/--builtin: each text set once, got 'ep-paper' twice" in err
    code, _, err = run_cli("texts", set_files[0], "--model", gguf, "--model", tmp_path / "missing.gguf")
    assert code == 2 and f"--model {tmp_path / 'missing.gguf'}: `path`" in err and "does not exist" in err
    code, _, err = run_cli("texts", set_files[0], "--model", gguf, "--bootstrap", 0)
    assert code == 2 and "--bootstrap" in err and "expected an integer >= 1, got 0" in err
    code, _, err = run_cli("texts", set_files[0], "--model", gguf, "--model", tmp_path, "--context-length", 8)
    assert code == 2 and f"--model {tmp_path}: `path` {str(tmp_path)!r} is a folder without config.json" in err
    # Several models and no set: the shipped set, by its name; its texts are longer than the tiny context.
    code, _, err = run_cli("texts", "--builtin", "--model", gguf, "--model", two_ggufs[1], "--no-progress")
    assert code == 2 and "set 'ep-paper', group 'causal', text 0 (under tiny_a.gguf): `text` has" in err
    assert "--context-length raises it" in err
