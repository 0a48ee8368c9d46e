"""The shared benchmark harness (benchmarks/harness.py), the PyTorch peers (benchmarks/torch_peers.py), and
the rule that benchmarks use epjax's public API only. Fast: no benchmark is run."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import harness  # noqa: E402


def test_measure_alternates_and_counts_rounds():
    calls = []
    jobs = [harness.Job(lambda: calls.append("a")), harness.Job(lambda: calls.append("b"), warm=lambda: None)]
    timings = harness.measure(jobs, budget_s=0.0, min_repeats=3)
    # a's warm-up is one call of a; b's is its own warm callable; then three rounds a, b
    assert calls == ["a"] + ["a", "b"] * 3
    assert [t.repeats for t in timings] == [3, 3]
    assert all(t.best <= t.median for t in timings)


def test_measure_per_job_cap_and_max_repeats():
    firsts, times = harness.measure_rounds(
        [lambda: None, harness.Job(lambda: None, max_repeats=2)], budget_s=1e9, min_repeats=1, max_repeats=5
    )
    assert len(firsts) == 2
    assert [len(t) for t in times] == [5, 2]


def test_measure_one_round_after_a_slow_warm_up():
    _, times = harness.measure_rounds([lambda: None], budget_s=0.0, min_repeats=4, slow_first_s=0.0)
    assert len(times[0]) == 1
    _, times = harness.measure_rounds([lambda: None], budget_s=0.0, min_repeats=4, slow_first_s=None)
    assert len(times[0]) == 4


def test_timing():
    t = harness.Timing.of([3.0, 1.0, 2.0], first=5.0)
    assert (t.median, t.best, t.repeats, t.first, t.compile) == (2.0, 1.0, 3, 5.0, 3.0)
    assert harness.Timing.of([2.0]).compile == 0.0
    assert harness.fmt_timing(t) == "2.00 s (1.00 s)"
    assert harness.fmt_timing(None) == "—"
    assert harness.fmt_ratio(harness.Timing.of([4.0]), harness.Timing.of([2.0])) == "2.00× (2.00×)"


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "—"), (2.5e-5, "25.0 µs"), (0.0123, "12.3 ms"), (1.5, "1.50 s")]
)
def test_fmt_time(seconds, text):
    assert harness.fmt_time(seconds) == text


def test_fmt_rate_and_table():
    assert [harness.fmt_rate(x) for x in (12.0, 1.5e3, 2e6, 3e9)] == ["12.0", "1.50 k", "2.00 M", "3.00 G"]
    assert harness.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert harness.prose("\n one\n  two \n") == "one two"


def test_header_and_footer():
    import torch

    head = harness.header("x.py", ["benchmarks/x.py", "--quick"], peers=[torch], device="torch threads 2",
                          notes=["float64 throughout"])
    lines = head.splitlines()
    assert lines[0].startswith("## ") and lines[0].endswith(" — benchmarks/x.py")
    assert lines[2].startswith("- device: CPU ") and "; torch threads 2; load average at start " in lines[2]
    assert lines[3].startswith("- versions: python ") and f"torch {torch.__version__}, numpy " in lines[3]
    assert lines[4].startswith("- epjax source: ")
    assert lines[5] == "- command: `python benchmarks/x.py --quick`"
    assert lines[6] == "- float64 throughout"
    assert harness.footer(0.0).startswith("Total run time ")


def test_publish(tmp_path, capsys):
    out = tmp_path / "results.md"
    harness.publish("## one", out=str(out), quick=True)
    assert out.read_text() == harness.PREFACE + "\n## one\n"
    out.write_text(out.read_text().rstrip("\n"))  # a file that does not end with a newline
    harness.publish("## two", out=str(out), quick=False)
    assert out.read_text() == harness.PREFACE + "\n## one\n\n## two\n"
    harness.publish("## three", out="-", quick=False)  # prints only
    assert "## three" not in out.read_text()
    assert "## three" in capsys.readouterr().out


def test_state_space_models():
    m = harness.random_model(0, 3, 2)
    assert m.name == "random (n=3, n_y=2, seed 0)"
    assert np.max(np.abs(np.linalg.eigvals(m.A))) == pytest.approx(0.9)
    assert all(np.all(np.linalg.eigvalsh(S) > 0) for S in (m.Q, m.R))
    assert m.astype(np.float32).A.dtype == np.float32
    assert harness.paper_model("2d").matrices[0].tolist() == [[0.8, 0.3], [0.0, 0.5]]


def _private_epjax_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("epjax"):
            private_module = any(part.startswith("_") for part in node.module.split("."))
            found += [f"from {node.module} import {a.name}" for a in node.names if private_module or a.name[0] == "_"]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in {"epjax", "kalman", "text_lib", "pretrained", "rnn", "ssm",
                                                          "transformer"}:
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmarks_use_public_api_only(script):
    assert _private_epjax_uses(BENCHMARKS / script) == []


@pytest.mark.parametrize("family", ["gru", "lstm", "elman", "transformer", "s4d", "mamba"])
def test_torch_peer_agrees_with_epjax(family, x64):
    """Each peer of benchmarks/neural.py gives epjax's per-step log-probabilities (scoring and sampling paths)."""
    pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp
    import torch
    import torch_peers

    from epjax import rnn, ssm, transformer

    T, B, V = 6, 2, 5
    if family in rnn.CELLS:
        model = rnn.Model(rnn.Config(V, 8, num_layers=2, cell=family, dtype="float64"))
    elif family == "transformer":
        model = transformer.Model(transformer.Config(V, T, 2, 2, 8, dtype="float64"))
    else:
        model = ssm.Model(ssm.Config(V, kind=family, d_model=8, num_layers=2, d_state=4, dtype="float64"))
    params = model.init(jax.random.key(0))
    peer = torch_peers.make_peer(family, model, params)
    with torch.inference_mode():
        x, forward = peer.sample(B, T, torch.Generator().manual_seed(2), per_step=True)
        both = torch.cat([x, x.flip(1)])
        theirs = peer.log_probs(both).numpy()
        reversed_sum = peer.score_reversed(x).numpy()
    # one epjax call: the peer's samples and their reversals
    ours = np.asarray(jax.vmap(lambda xi: model.log_probs(params, xi))(jnp.asarray(both.numpy(), jnp.int32)))
    np.testing.assert_allclose(theirs, ours, atol=1e-10)  # scoring path
    np.testing.assert_allclose(forward.numpy(), ours[:B], atol=1e-10)  # sampling path (KV cache, recurrences)
    np.testing.assert_allclose(reversed_sum, ours[B:].sum(1), atol=1e-10)
