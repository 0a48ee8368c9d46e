"""The library side of ``epjax kalman``, ``epjax decompose`` and the demo's Kalman check: results that render
themselves, errors with fields, figures whose legends hide no data."""

import json

import jax
import numpy as np
import pytest
from helpers import PAPER_2D
from matplotlib.backends.backend_agg import FigureCanvasAgg

from epjax import families, kalman, train
from epjax.decomposition import exact_decomposition
from epjax.experiments import decompositions as dec
from epjax.experiments import demo
from epjax.experiments import kalman_comparison as kc

STEPS = (2, 4)


@pytest.fixture(scope="module")
def comparison():
    return kc.compare_kalman(kc.select_models(), STEPS, num_samples=400, seed=3, curve=True, progress=False)


def test_comparison_matches_the_exact_library_values(comparison):
    assert [m.spec.name for m in comparison.models] == ["scalar", "2d"]
    with jax.enable_x64(True):
        for m in comparison.models:
            params = kalman.example(m.spec.name)
            for row in m.rows:
                assert row.exact == pytest.approx(float(kalman.entropy_production(params, row.T)), rel=1e-12)
                assert abs(row.mean - row.exact) < 5 * row.stderr  # Monte Carlo within a few SE of exact
            assert m.curve[0] == [1, 2, 3, 4]
            assert m.curve[1][3] == pytest.approx(m.rows[-1].exact, rel=1e-12)
    # A report, not a check: no exit status of its own, but a verdict for every model.
    assert comparison.passed is None
    text = comparison.table()
    assert "verdict scalar: consistent" in text and "verdict 2d: consistent" in text


def test_comparison_json_and_csv_agree(comparison):
    report = comparison.to_json()
    json.dumps(report, allow_nan=False)  # strict JSON
    assert (report["command"], report["seed"], report["steps"]) == ("kalman", 3, list(STEPS))
    rows = list(comparison.csv_rows())
    assert len(rows) == 4 and len(comparison.csv_header()) == len(rows[0])
    by_key = {(m["name"], r["T"]): r for m in report["models"] for r in m["results"]}
    for row in rows:
        ref = by_key[(row[0], row[1])]
        assert (row[2], row[3], row[4], row[5]) == (ref["exact"], ref["mc_mean"], ref["mc_stderr"], ref["z"])


def test_comparison_as_a_check_fails_when_no_estimate_can_pass():
    result = demo.kalman_check(num_samples=400, steps=STEPS, z_limit=0.0, progress=False)
    assert result.passed is False
    assert "verdict scalar: FAIL" in result.table()
    result = demo.kalman_check(num_samples=400, steps=STEPS, progress=False)
    assert result.passed is True


def _overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("which", ["kalman", "decompose"])
def test_legends_sit_outside_the_data(comparison, which):
    result = comparison if which == "kalman" else dec.decompose_kalman(kc.select_models(), 6)
    fig = result.plot()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None and ax.get_xlabel() and "nats" in ax.get_ylabel() and ax.get_title()
        assert not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    assert "time reversal" in fig.get_suptitle()


def test_state_space_file_errors_carry_their_fields(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"A": [[0.9]], "C": [[1.0]]}')
    with pytest.raises(kc.StateSpaceFileError) as info:
        kc.load_state_space(path)
    assert info.value.source == str(path) and info.value.reason.startswith("missing keys 'Q', 'R'")
    with pytest.raises(kc.StateSpaceFileError, match=r"^--model x: missing keys"):
        kc.load_state_space(path, source="--model x")
    path.write_text('{"A": [[0.9]], "C": [[1.0, 2.0]], "Q": [[1.0]], "R": [[1.0]]}')
    spec = kc.load_state_space(path)
    with pytest.raises(kc.KalmanModelError) as info:
        spec.innovation_params()
    assert info.value.method is None and "`C` must have shape" in info.value.reason
    with pytest.raises(ValueError, match=r"`name` must be one of 'scalar', '2d', got '3d'"):
        kc.example_spec("3d")


def test_dense_refusal_names_method_and_length():
    with pytest.raises(kc.KalmanModelError) as info:
        kc.compare_kalman(kc.select_models("2d"), [20_000], num_samples=10, method="dense", progress=False)
    assert (info.value.method, info.value.num_steps, info.value.source) == ("dense", 20_000, "example '2d'")


def test_model_files_are_the_inputs(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in PAPER_2D.items()} | {"name": "mine"}))
    specs = kc.select_models(files=[path])
    result = dec.decompose_kalman(specs, 5)
    assert result.inputs == (path,)
    entry = result.to_json()["models"][0]
    assert entry["name"] == "mine" and entry["total"] == pytest.approx(entry["ep"], rel=1e-10)
    assert len(list(result.csv_rows())) == 5


@pytest.fixture(scope="module")
def saved_chain(tmp_path_factory):
    model = families.new_model("markov", 3)
    params = model.init(jax.random.key(0))
    path = tmp_path_factory.mktemp("saved") / "chain.npz"
    train.save(path, model, params, extra={"data": {"length": 6}})
    return path


def test_decompose_saved_by_enumeration(saved_chain):
    result = dec.decompose_saved(saved_chain, num_steps=4, progress=False)
    assert result.inputs == (saved_chain,)
    (m,) = result.models
    model, params, _ = train.load(saved_chain)
    np.testing.assert_allclose(m.terms["D"], exact_decomposition(model, params, num_steps=4).D, rtol=1e-12)
    assert m.total == pytest.approx(m.ep, abs=1e-6)


def test_decompose_saved_errors_carry_their_fields(saved_chain):
    with pytest.raises(dec.EnumerationTooLargeError) as info:
        dec.decompose_saved(saved_chain, num_steps=30, progress=False)
    e = info.value
    assert (e.num_steps, e.vocab_size, e.max_sequences, e.largest) == (30, 3, dec.MAX_SEQUENCES, 12)
    # Without num_steps the training length 6 does not fit 100 paths: T = 4, and the note says why.
    result = dec.decompose_saved(saved_chain, max_sequences=100, progress=False)
    assert result.models[0].num_steps == 4 and result.models[0].note.startswith("T = 4, not the training length 6")
