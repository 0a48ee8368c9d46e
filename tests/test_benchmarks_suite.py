"""The pure parts of the benchmark suite (benchmarks/run.py, peak.py, harness.summary_row): summary rows to the
table, the summary block of RESULTS.md, the FLOP counts against XLA's cost analysis, the exponent fit. Fast: no
benchmark is run."""

import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402
import peak  # noqa: E402
import run  # noqa: E402

from epjax import llama, rnn, transformer  # noqa: E402


def peak_rows(best_flops_per_s: float, dtype: str = "float32") -> list[dict]:
    """Summary rows as peak.py writes them: two implementations at two sizes; the fastest round's rate of the
    faster implementation at the faster size is the peak."""
    rows = []
    for n, scale in ((512, 0.5), (1024, 1.0)):
        for name, factor in (("jnp.dot (jit)", 1.0), ("numpy @ (BLAS)", 0.5)):
            flops = 2.0 * n**3
            rate = best_flops_per_s * factor * scale
            rows.append(harness.summary_row(
                "peak", "matmul", f"{dtype} {name}", f"n = {n}", [flops / rate], flops=flops, kind="peak", dtype=dtype,
                n=n, peak_flops_per_s=rate, best_flops_per_s=rate))
    return rows


# ---------------------------------------------------------------------------------------------------- rows


def test_summary_row_pairs_rounds_and_cuts_to_the_shared_ones():
    ours = harness.Timing.of([1.0, 2.0, 3.0])
    assert ours.rounds == (1.0, 2.0, 3.0) and ours.median == 2.0
    row = harness.summary_row("s", "f", "t", "n", ours, "peer", [4.0, 5.0], flops=10, units=3, unit="tokens",
                              extra_key=1)
    assert row["epjax_s"] == [1.0, 2.0] and row["peer_s"] == [4.0, 5.0]  # the peer sat out round 3
    assert row["flops"] == 10.0 and row["extra_key"] == 1 and row["compile_s"] is None
    assert json.loads(json.dumps(row)) == row
    with pytest.raises(ValueError, match="peer and peer_times"):
        harness.summary_row("s", "f", "t", "n", ours, "peer")
    with pytest.raises(ValueError, match="rounds"):
        harness.summary_row("s", "f", "t", "n", harness.Timing(1.0, 1.0, 1))


def test_write_summary_round_trips(tmp_path):
    rows = [harness.summary_row("s", "f", "t", "n", [0.5], "p", [1.0])]
    harness.write_summary(str(tmp_path / "rows.json"), rows)
    assert run.check_rows(json.loads((tmp_path / "rows.json").read_text()), "rows.json") == rows
    harness.write_summary(None, rows)  # no path: nothing written, no error


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("task"), "lacks task"),
        (lambda r: r.update(epjax_s=[]), "epjax_s must be positive"),
        (lambda r: r.update(peer_s=None), "peer and peer_s together"),
        (lambda r: r.update(peer_s=[1.0, 2.0]), "same rounds"),
    ],
)
def test_check_rows_names_the_file_the_row_and_the_problem(change, message):
    row = harness.summary_row("s", "f", "t", "n", [0.5], "p", [1.0])
    change(row)
    with pytest.raises(ValueError, match=f"x.json: row 0 .*{message}"):
        run.check_rows([row], "x.json")
    with pytest.raises(ValueError, match="must be a JSON list"):
        run.check_rows({"rows": []}, "x.json")


def test_render_rows_ratios_rates_targets_and_profile_pointers():
    # epjax 1, 2, 4 s against a peer at 3, 3, 3 s: ratios 3, 1.5, 0.75 -> median 1.5 (target met, just)
    met = harness.summary_row("neural", "gru", "score", "B = 4", [1.0, 2.0, 4.0], "torch", [3.0, 3.0, 3.0],
                              compile_s=0.5, flops=4e9)
    # 0.5x the peer; the LSTM has a profile in RESULTS.md
    missed = harness.summary_row("neural", "lstm", "score", "B = 4", [2.0], "torch", [1.0])
    # at 1e9 FLOP/s against a 4 GFLOP/s peak: 25 % < 50 %, though 3x the peer
    slow = harness.summary_row("neural", "transformer", "score", "B = 256", [1.0], "torch", [3.0], flops=1e9,
                               peak_target=0.5)
    alone = harness.summary_row("kalman", "Kalman", "exact EP", "T = 1e6", [2.0], target_s=5.0, note="a | b")
    rows = peak_rows(4e9) + [met, missed, slow, alone]
    peaks = {"float32": peak.peak_of(rows, "float32"), "float64": None}
    assert peaks["float32"] == 4e9  # the highest rate over implementations and sizes
    lines = run.render_rows(rows, peaks).splitlines()
    assert len(lines) == 2 + 4  # head, rule, and no peak rows
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][4] == "2.00 s (1.00 s)" and cells[0][7] == "3.00 s (3.00 s)"
    assert cells[0][8] == "**1.50×** [0.75–3.00]"
    assert cells[0][9] == "2.00" and cells[0][10] == "50.0%"  # 4e9 FLOP / 2 s against 4e9 FLOP/s
    assert cells[0][11].startswith("met")
    assert cells[1][8].startswith("**0.50×**") and cells[1][11].startswith("**missed**")
    assert run.anchor(run.PROFILES["neural", "lstm"]) in cells[1][11]
    assert cells[2][10] == "25.0%" and "**missed**" in cells[2][11] and "50% of peak ✗" in cells[2][11]
    assert "≥ 1.5× peer ✓" in cells[2][11]
    assert cells[3][8] == "—" and cells[3][11].startswith("met (≤ 5 s")
    assert lines[-1].endswith("| a \\| b |")  # a "|" in a cell is escaped, not a new column


def test_llamacpp_rows_need_only_parity():
    row = harness.summary_row("llamacpp", "SmolLM2", "score", "n", [1.0], "llama.cpp", [1.1])
    assert run.judge(row, {})[0] is True
    assert run.judge({**row, "script": "lm"}, {})[0] is False


def test_render_summary_has_machine_versions_load_and_peaks():
    rows = peak_rows(4e9) + peak_rows(2e9, "float64") + [harness.summary_row("s", "f", "t", "n", [1.0], "p", [2.0])]
    text = run.render_summary(rows, command="python benchmarks/run.py", load_start="1.00, 2.00, 3.00",
                              load_end="4.00, 5.00, 6.00", runs=["s (1 s)"], when="2026-01-01 00:00 UTC")
    assert text.startswith("## Summary — 2026-01-01 00:00 UTC")
    assert "avx2" in text and "avx512f" in text and "fma" in text and "cores" in text
    assert "jax " in text and "numpy " in text
    assert "at the start 1.00, 2.00, 3.00; at the end 4.00, 5.00, 6.00" in text
    assert "float32 4.0 GFLOP/s, float64 2.0 GFLOP/s" in text
    assert "1 met, 0 missed, 0 rows without one" in text
    assert "caution" not in text
    fast = harness.summary_row("s", "f", "t", "n", [1.0], flops=5e9)  # 5 GFLOP/s against a 4 GFLOP/s peak
    text = run.render_summary(rows + [fast], command="c", load_start="1", load_end="2", runs=[])
    assert "**caution**: 1 row(s) exceed 100 % of the measured peak" in text


# ---------------------------------------------------------------------------------------------------- RESULTS.md


SECTIONS = "## 2026-01-01 — benchmarks/kalman.py\n\nold figures\n\n## 2026-01-02 — benchmarks/neural.py\n\nmore\n"


def test_summary_block_goes_after_the_title_paragraph_and_replaces_itself():
    text = harness.PREFACE + "\n" + SECTIONS
    once = run.replace_summary(text, "## Summary — first\n\n| a |")
    assert once.startswith(harness.PREFACE)
    assert once.index(run.START) < once.index("## Summary — first") < once.index(run.END) < once.index("## 2026-01-01")
    assert once.replace(f"{run.START}\n## Summary — first\n\n| a |\n{run.END}\n\n", "") == text
    assert run.replace_summary(once, "## Summary — first\n\n| a |") == once  # idempotent
    twice = run.replace_summary(once, "## Summary — second")
    assert "first" not in twice and twice.count(run.START) == 1 and twice.count(run.END) == 1
    assert twice.endswith(SECTIONS) and twice.startswith(harness.PREFACE)


def test_summary_block_in_a_file_without_sections():
    once = run.replace_summary(harness.PREFACE, "## Summary")
    assert once.startswith(harness.PREFACE) and once.rstrip().endswith(run.END)
    assert run.replace_summary(once, "## Summary") == once


def test_main_writes_the_summary_on_top_and_appends_sections(tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    out.write_text(harness.PREFACE + "\n" + SECTIONS)
    row = harness.summary_row("kalman", "Kalman", "log-likelihood", "T = 10", [1.0], "dynamax", [2.0])

    calls = []

    def fake(name, quick, workdir, timeout, extra):
        calls.append((name, quick, list(extra)))
        return [row], f"## today — benchmarks/{name}.py\n\nnew figures", f"{name} (1 s)"

    monkeypatch.setattr(run, "run_script", fake)
    run.main(["run.py", "--only", "kalman", "--no-peak", "--out", str(out)])
    text = out.read_text()
    assert text.startswith(harness.PREFACE) and SECTIONS in text
    assert text.index(run.END) < text.index("## 2026-01-01") < text.index("## today — benchmarks/kalman.py")
    assert "**2.00×** [2.00–2.00]" in text
    run.main(["run.py", "--only", "kalman", "--no-peak", "--out", str(out), "--pass", "kalman:--a 'b c'"])
    assert calls == [("kalman", False, []), ("kalman", False, ["--a", "b c"])]
    again = out.read_text()
    assert again.count(run.START) == 1 and again.count("## today — benchmarks/kalman.py") == 2
    with pytest.raises(SystemExit):
        run.main(["run.py", "--only", "nonsense"])
    with pytest.raises(SystemExit):
        run.main(["run.py", "--pass", "nonsense:--x"])


# ---------------------------------------------------------------------------------------------------- FLOPs


def test_transformer_flops_against_xla():
    config = transformer.Config(vocab_size=50, context_length=16, num_layers=2, num_heads=4, embed_size=32)
    model = transformer.Model(config)
    params = model.init(jax.random.key(0))
    x = jnp.zeros((3, 16), jnp.int32)
    xla = peak.xla_flops(lambda p, x: jax.vmap(lambda xi: model.logits(p, xi))(x), params, x)
    ours = peak.transformer_flops(config, 16, 3)
    # the formula, by hand: 3 [2 (8·16·32² + 16·16·32² + 4·16²·32) + 2·16·32·50]
    assert ours == 3 * (2 * (8 * 16 * 32**2 + 16 * 16 * 32**2 + 4 * 16**2 * 32) + 2 * 16 * 32 * 50)
    # XLA counts the elementwise work (softmax, LayerNorm, GELU, residuals) as well: a little more, not less
    assert ours <= xla <= 1.15 * ours


def test_llama_flops_against_xla():
    config = llama.Config(vocab_size=64, context_length=32, num_layers=1, num_heads=4, num_kv_heads=2,
                          embed_size=32, mlp_size=48, bos_id=0)
    model = llama.Model(config)
    params = model.init(jax.random.key(0))
    x = jnp.zeros((2, 16), jnp.int32)
    xla = peak.xla_flops(lambda p, x: jax.vmap(lambda xi: model.logits(p, xi))(x), params, x)
    ours = peak.llama_flops(config, 16, 2)
    assert ours <= xla <= 1.15 * ours  # one layer: XLA counts a scanned layer's body once
    # grouped-query attention: fewer key/value heads, fewer FLOPs, by exactly the k and v projections' share
    mha = peak.llama_flops(dataclasses.replace(config, num_kv_heads=4), 16, 2)
    assert mha - ours == 2 * 4 * 16 * 32 * (4 - 2) * 8


@pytest.mark.parametrize("cell", ["elman", "gru", "lstm"])
def test_rnn_flops_against_xla(cell):
    config = rnn.Config(vocab_size=40, hidden_size=32, num_layers=2, cell=cell)
    model = rnn.Model(config)
    params = model.init(jax.random.key(0))
    T, B = 8, 3  # T < vocab_size: the first layer projects the T embeddings (not the whole vocabulary)
    x = jnp.zeros((B, T), jnp.int32)
    xla = peak.xla_flops(lambda p, x: jax.vmap(lambda xi: jnp.sum(model.log_probs(p, xi)))(x), params, x)
    total, recurrent = peak.rnn_flops(config, T, B)
    # XLA counts the scan's body (the recurrent projection) once, not T times
    assert 0.85 * (total - recurrent + recurrent / T) <= xla <= 1.15 * (total - recurrent + recurrent / T)
    g = peak.RNN_GATES[cell]
    assert recurrent == B * T * 2 * 2 * g * 32 * 32


def test_kalman_flops_formulas():
    assert peak.kalman_exact_flops(4, 4, 10) == 10 * 30 * 4**3  # 30 n³ a step when n_y = n
    assert peak.kalman_loglik_flops(2, 1, 5, 3) == 3 * 5 * (8 + 8 + 1)


# ---------------------------------------------------------------------------------------------------- exponents


def test_fit_exponent_recovers_the_power_law():
    rng = np.random.default_rng(0)
    xs = np.array([64, 128, 256, 512, 1024])
    seconds = 3e-6 * xs**1.5 * np.exp(rng.normal(0, 0.01, xs.size))
    assert peak.fit_exponent(xs, seconds) == pytest.approx(1.5, abs=0.03)
    assert peak.fit_exponent([1, 2], [5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="two or more"):
        peak.fit_exponent([1], [1.0])
    with pytest.raises(ValueError, match="positive"):
        peak.fit_exponent([0, 1], [1.0, 2.0])
