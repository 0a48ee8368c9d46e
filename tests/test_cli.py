"""The ``epjax`` command line, run in-process through ``main([...])``.

Every run uses T in (2, 4) and the built-in model shapes, so the compiled functions are shared between tests
(jit caches are per process) and the module runs in seconds after the first compilation.
"""

import csv
import json
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest
from helpers import PAPER_2D, PAPER_SCALAR, run_cli

import epjax
from epjax import cli, kalman

STEPS = (2, 4)
SAMPLES = 400

ROW = re.compile(r"^\s+(\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+) ± (\d+\.\d+)\s+([-+]\d+\.\d+|n/a)$")




def parse_tables(stdout):
    """{model name: {T: (exact, mean, stderr, z)}} from the printed tables."""
    tables, name = {}, None
    for line in stdout.splitlines():
        header = re.match(r"^(\S+): n = \d+ state", line)
        if header:
            name = header.group(1)
            tables[name] = {}
            continue
        row = ROW.match(line)
        if row and name is not None:
            T, exact, mean, se, z = row.groups()
            tables[name][int(T)] = (float(exact), float(mean), float(se), None if z == "n/a" else float(z))
    return tables


def exact_values(model, steps=STEPS):
    with jax.enable_x64(True):
        params = kalman.from_state_space(**model)
        return {T: float(kalman.entropy_production(params, T)) for T in steps}, float(
            kalman.entropy_production_rate(params)
        )


@pytest.fixture(scope="module")
def kalman_run(tmp_path_factory):
    """One ``epjax kalman`` run on both paper examples writing JSON, CSV and a PNG figure."""
    tmp = tmp_path_factory.mktemp("kalman")
    files = {"json": tmp / "out.json", "csv": tmp / "out.csv", "plot": tmp / "fig.png"}
    code, out, err = run_cli(
        "kalman", "--steps", *STEPS, "--samples", SAMPLES, "--seed", 3, "--no-progress",
        "--json", files["json"], "--csv", files["csv"], "--plot", files["plot"],
    )  # fmt: skip
    return code, out, err, files


def test_kalman_table_matches_library(kalman_run):
    code, out, err, _ = kalman_run
    assert code == 0, err
    tables = parse_tables(out)
    assert set(tables) == {"scalar", "2d"}
    for name, model in (("scalar", PAPER_SCALAR), ("2d", PAPER_2D)):
        exact, rate = exact_values(model)
        assert set(tables[name]) == set(STEPS)
        for T, (shown_exact, mean, se, z) in tables[name].items():
            assert shown_exact == pytest.approx(exact[T], abs=6e-7)  # printed with 6 decimals
            assert se > 0
            assert z == pytest.approx((mean - shown_exact) / se, abs=0.02)
            assert abs(mean - exact[T]) < 5 * se
    assert "asymptotic rate lim S_y(T)/T = 0.000000 nats/step" in out
    assert f"asymptotic rate lim S_y(T)/T = {exact_values(PAPER_2D)[1]:.6f} nats/step" in out
    assert f"N = {SAMPLES} trajectories" in out


def test_kalman_json(kalman_run):
    _, _, _, files = kalman_run
    report = json.loads(files["json"].read_text())
    assert report["command"] == "kalman"
    assert report["epjax_version"] == epjax.__version__
    assert (report["num_samples"], report["seed"], report["steps"]) == (SAMPLES, 3, list(STEPS))
    assert [m["name"] for m in report["models"]] == ["scalar", "2d"]
    for entry, model in zip(report["models"], (PAPER_SCALAR, PAPER_2D), strict=True):
        exact, rate = exact_values(model)
        assert entry["rate"] == pytest.approx(rate, abs=1e-12)
        np.testing.assert_allclose(entry["A"], model["A"])
        assert [r["T"] for r in entry["results"]] == list(STEPS)
        for r in entry["results"]:
            assert r["exact"] == pytest.approx(exact[r["T"]], rel=1e-12)
            assert r["num_samples"] == SAMPLES
            assert r["z"] == pytest.approx((r["mc_mean"] - r["exact"]) / r["mc_stderr"])
            assert r["ci95_low"] < r["mc_mean"] < r["ci95_high"]
        # --plot also asks for the exact curve at every T = 1 .. max(steps); sigma = 0 at T = 1.
        assert entry["exact_curve"]["T"] == [1, 2, 3, 4]
        assert entry["exact_curve"]["exact"][0] == pytest.approx(0.0, abs=1e-12)
        assert entry["exact_curve"]["exact"][3] == pytest.approx(exact[4], rel=1e-12)
    assert report["models"][0]["rate"] == 0.0


def test_kalman_csv(kalman_run):
    _, _, _, files = kalman_run
    with files["csv"].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], int(r["T"])) for r in rows] == [(m, T) for m in ("scalar", "2d") for T in STEPS]
    report = json.loads(files["json"].read_text())
    by_key = {(m["name"], r["T"]): r for m in report["models"] for r in m["results"]}
    for row in rows:
        ref = by_key[(row["model"], int(row["T"]))]
        for column in ("exact", "mc_mean", "mc_stderr", "z"):
            assert float(row[column]) == ref[column]  # repr round-trips floats exactly


def test_kalman_plot_png(kalman_run):
    _, _, _, files = kalman_run
    data = files["plot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_kalman_plot_pdf_and_dense_method(tmp_path):
    path = tmp_path / "fig.pdf"
    code, out, err = run_cli(
        "kalman", "--example", "scalar", "--steps", *STEPS, "--samples", SAMPLES, "--method", "dense",
        "--plot", path, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 1000
    exact, _ = exact_values(PAPER_SCALAR)
    table = parse_tables(out)["scalar"]
    for T in STEPS:
        assert table[T][0] == pytest.approx(exact[T], abs=6e-7)


def test_kalman_model_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in PAPER_2D.items()} | {"name": "mine"}))
    code, out, err = run_cli(
        "kalman", "--model", path, "--steps", *STEPS, "--samples", SAMPLES, "--no-progress"
    )
    assert code == 0, err
    exact, _ = exact_values(PAPER_2D)
    table = parse_tables(out)["mine"]
    assert {T: v[0] for T, v in table.items()} == pytest.approx(exact, abs=6e-7)
    assert f"--model {path}" in out


def test_kalman_progress_bar_goes_to_stderr():
    code, out, err = run_cli("kalman", "--example", "scalar", "--steps", *STEPS, "--samples", SAMPLES)
    assert code == 0
    assert "exact vs Monte Carlo" in err
    assert "exact vs Monte Carlo" not in out


BAD_MODELS = {
    "malformed": ('{"A": [[0.9]], "C": [[1.0]], "Q": [[1.0]]', "malformed JSON at line 1"),
    "missing": ('{"A": [[0.9]], "C": [[1.0]], "Q": [[1.0]]}', "missing key 'R'"),
    "missing_two": ('{"A": [[0.9]], "C": [[1.0]]}', "missing keys 'Q', 'R'"),
    "nonsquare": ('{"A": [[0.9, 0.1]], "C": [[1]], "Q": [[1]], "R": [[1]]}', "key 'A' must be a square"),
    "ragged": ('{"A": [[0.9, 0.1], [0.2]], "C": [[1, 0]], "Q": [[1]], "R": [[1]]}', "different lengths"),
    "flat": ('{"A": [0.9, 0.1], "C": [[1]], "Q": [[1]], "R": [[1]]}', "got a flat list"),
    "text": ('{"A": [["a"]], "C": [[1]], "Q": [[1]], "R": [[1]]}', "key 'A' must be a matrix"),
    "not_object": ("[[0.9]]", "expected a JSON object"),
    "unknown_key": ('{"A": 0.9, "C": 1, "Q": 1, "R": 1, "B": 1}', "unknown key 'B'"),
    # Shapes that only the library can judge: its ValueError is reported with the file name.
    "wrong_C": ('{"A": [[0.9]], "C": [[1.0, 2.0]], "Q": [[1.0]], "R": [[1.0]]}', "`C` must have shape"),
    "indefinite_R": ('{"A": [[0.9]], "C": [[1.0]], "Q": [[1.0]], "R": [[-1.0]]}', "`R` must be"),
    "no_dare": ('{"A": [[1.5]], "C": [[0.0]], "Q": [[1.0]], "R": [[1.0]]}', "DARE"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_kalman_model_file_errors(tmp_path, case):
    text, message = BAD_MODELS[case]
    path = tmp_path / f"{case}.json"
    path.write_text(text)
    code, out, err = run_cli("kalman", "--model", path, "--steps", 2, "--samples", 10, "--no-progress")
    assert code == 2
    assert err.startswith(f"epjax: error: --model {path}: ")
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_kalman_missing_file(tmp_path):
    code, _, err = run_cli("kalman", "--model", tmp_path / "nope.json")
    assert code == 2
    assert "cannot read the file" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kalman", "--plot", "fig.jpg"], "the file extension must be one of .png, .pdf, .svg"),
        (["kalman", "--json", "no/such/folder/out.json"], "does not exist"),
    ],
)
def test_kalman_output_path_errors_before_any_work(argv, message):
    code, out, err = run_cli(*argv)
    assert code == 2
    assert err.startswith("epjax: error: ")
    assert message in err
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["kalman", "--samples", "1"],
        ["kalman", "--steps", "0"],
        ["kalman", "--example", "3d"],
        ["kalman", "--example", "scalar", "--model", "m.json"],
        ["no-such-command"],
        [],
    ],
)
def test_usage_errors(argv):
    code, out, err = run_cli(*argv)
    assert code == 2
    assert "usage: epjax" in err


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip().startswith(f"epjax {epjax.__version__}")


def test_every_command_has_help():
    assert {"kalman", "demo"} <= set(cli.COMMANDS)
    for name in cli.COMMANDS:
        code, out, _ = run_cli(name, "--help")
        assert code == 0
        assert f"usage: epjax {name}" in out


def test_demo_kalman_section(monkeypatch):
    monkeypatch.setattr(cli._demo, "DEMO_KALMAN_STEPS", STEPS)  # the real demo uses (5, 10, 20, 50)
    code, out, err = run_cli("demo", "--only", "kalman", "--samples", SAMPLES, "--no-progress")
    assert code == 0, err
    assert set(parse_tables(out)) == {"scalar", "2d"}
    assert "verdict scalar: PASS" in out and "verdict 2d: PASS" in out
    assert "all 1 section(s) passed" in out


def test_demo_reports_a_failed_check(monkeypatch):
    monkeypatch.setattr(cli._demo, "DEMO_KALMAN_STEPS", STEPS)
    monkeypatch.setattr(cli._demo, "DEMO_Z_LIMIT", 0.0)  # no estimate can be within 0 SE
    code, out, _ = run_cli("demo", "--only", "kalman", "--samples", SAMPLES, "--no-progress")
    assert code == 1
    assert "verdict scalar: FAIL" in out
    assert "FAILED sections: kalman" in out


def test_demo_sections_are_a_registry(monkeypatch):
    calls = []

    def section(args):
        calls.append(args.samples)
        print("extra section ran")
        return True

    extra = cli.DemoSection("extra", "An extra", section)
    monkeypatch.setattr(cli._demo, "DEMO_SECTIONS", [*cli._demo.DEMO_SECTIONS, extra])
    code, out, _ = run_cli("demo", "--only", "extra", "--samples", 50)
    assert code == 0
    assert calls == [50]
    assert "== An extra ==" in out and "extra section ran" in out
    assert "Kalman" not in out


def test_console_script_demo():
    """The installed ``epjax`` script runs the full demo (Kalman T = 5 ... 50, the trained GRU); all verdicts pass."""
    exe = shutil.which("epjax")
    if exe is None:
        pytest.skip("the epjax console script is not installed (pip install -e .)")
    proc = subprocess.run([exe, "demo", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict scalar: PASS" in proc.stdout and "verdict 2d: PASS" in proc.stdout
    assert "verdict neural: PASS" in proc.stdout


@pytest.mark.parametrize("module", ["epjax", "epjax.cli"])
def test_python_dash_m(module):
    """``python -m epjax`` and ``python -m epjax.cli`` are the console script: same usage line, same exit codes."""
    import sys

    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith(f"epjax {epjax.__version__}"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", module, "kalman", "--steps", "0"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "usage: epjax kalman" in proc.stderr, proc.stderr
