"""Scale-out: the estimators and text scoring over several devices and several processes (``jax.distributed``).

Oracle: the same computation in this test process (one device unless XLA_FLAGS says otherwise). The runs under
test are real: a subprocess with forced host devices (``--xla_force_host_platform_device_count``), and two
processes on localhost joined by ``jax.distributed.initialize`` with a local coordinator (gloo collectives,
jax's default on CPU), each with two devices. Every process must return the same numbers as the oracle, to
float64 round-off: each trajectory is computed alone from ``fold_in(key, i)``, but a device's share of a batch
is a smaller array, XLA vectorises sums differently for it, and a batch's gradient sum adds per-device partial
sums (measured: up to 16 ulps of a sample's sigma, 22 of a gradient; the means agree to 1 ulp). The processes
agree with each other bit for bit.

This file is also the worker: ``python tests/test_distributed.py [--coordinator HOST:PORT --num-processes N
--process-id I]`` prints :func:`compute`'s results as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import PAPER_2D

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# A guard against a hung process, not a timing: each run needs about 10 CPU seconds (imports and small
# compilations), but six run at once here, beside the rest of the suite on a small machine.
TIMEOUT = 300
TEXTS = ["The cat sat. The dog ran to the cat!", "It rained. Then it stopped. The sun came out."]


def _estimate(est) -> dict:
    return {"mean": est.mean, "stderr": est.stderr, "sigmas": np.asarray(est.sigmas).tolist()}


def compute() -> dict:
    """Kalman and Markov-chain EP, a gradient, text scoring and sampling on a tiny tokenizer, as JSON values."""
    from helpers import make_params, train_bpe

    import epjax
    from epjax import kalman, markov, pretrained, text

    rng = np.random.default_rng(0)
    chain = lambda size: (markov.MarkovChain(size), markov.from_probabilities(
        rng.dirichlet(np.ones(size)), rng.dirichlet(np.ones(size), size=size)))
    tok = pretrained.Tokenizer(train_bpe(TEXTS, vocab_size=270, repeat=2), bos_id=0)
    out = {"devices": len(jax.devices()), "processes": jax.process_count()}
    with jax.enable_x64(True):
        key = jax.random.key(7)
        # batch_size=8 over 4 devices is 2 trajectories a device; 21 samples leave the last batch cut.
        ep = dict(num_steps=6, num_samples=21, batch_size=8)
        # Parameters committed to one device, as the outputs of a user's computation may be.
        params = jax.device_put(make_params(0, 2, 2), jax.local_devices()[0])
        out["kalman"] = _estimate(epjax.entropy_production(key, kalman.model, params, **ep))
        # The gradient's per-trajectory weights and in-batch sums, and the EP estimate it starts from.
        grad = epjax.entropy_production_gradient(key, *chain(5), **ep)
        out["markov"] = _estimate(grad.estimate)
        out["markov_gradient"] = [np.asarray(g).tolist() for g in grad.grad]
        lm, lm_params = chain(tok.vocab_size)
        scores = text.score_texts(lm, lm_params, tok, TEXTS, batch_size=3, bucket=4)
        out["text_log_probs"] = [s.log_prob for s in scores]
        out["text_sigmas"] = [[s.token.sigma, s.sentence.sigma] for s in scores]
        res = text.sample_entropy_production(key, lm, lm_params, tok, num_samples=9, num_steps=12, batch_size=4)
        out["text_sample"] = np.asarray(res.sigma).tolist()
    return out



# --- the runs under test, all started at once (they overlap each other and the in-process oracle) -----------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _env(devices: int) -> dict:
    """This environment with ``devices`` forced CPU devices (replacing any count XLA_FLAGS already forces)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])}


class _Runs:
    """Subprocesses by name; :meth:`json` waits for one (with a timeout) and parses its last JSON line."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, dict] = {}

    def start(self, name: str, argv: list[str], devices: int) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def json(self, name: str) -> dict:
        if name not in self.outputs:
            proc = self.procs[name]
            try:
                out, err = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"{name}: no result within {TIMEOUT} s; stderr:\n{err[-4000:]}")
            if proc.returncode != 0:
                pytest.fail(f"{name}: exit status {proc.returncode}; stderr:\n{err[-4000:]}")
            lines = [line for line in out.splitlines() if line.startswith("{")]  # gloo logs its connections
            assert lines, f"{name}: no JSON line in its output:\n{out[-2000:]}"
            self.outputs[name] = json.loads(lines[-1])
        return self.outputs[name]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


EXAMPLE_ARGS = ["--num-steps", "5", "--num-samples", "300", "--batch-size", "64", "--seed", "3", "--json"]


@pytest.fixture(scope="module")
def runs():
    runs = _Runs()
    worker = str(HERE / "test_distributed.py")
    try:
        runs.start("forced", [worker], devices=4)
        coordinator = f"localhost:{_free_port()}"
        for i in range(2):
            runs.start(f"process {i}", [worker, "--coordinator", coordinator, "--num-processes", "2",
                                       "--process-id", str(i)], devices=2)
        runs.start("example", [str(ROOT / "examples" / "multihost.py"), "--local", "2", *EXAMPLE_ARGS], devices=1)
        yield runs
    finally:
        runs.stop()


@pytest.fixture(scope="module")
def oracle(runs):  # after `runs`: the subprocesses start first and overlap this computation
    return compute()


def _close(got, want, scale) -> None:
    """Equal up to float64 round-off: sums of the same terms taken in another order (per-device batch shapes
    change XLA's vectorised reductions; a cross-device sum adds partial sums) differ by a few ulps of ``scale``."""
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=64 * np.finfo(np.float64).eps * scale)


def _assert_same_results(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in ("kalman", "markov"):
        w = np.asarray(want[name]["sigmas"])
        assert len(got[name]["sigmas"]) == len(w) == 21
        _close(got[name]["sigmas"], w, np.abs(w).max())
        _close([got[name]["mean"], got[name]["stderr"]], [want[name]["mean"], want[name]["stderr"]], np.abs(w).max())
    for g, w in zip(got["markov_gradient"], want["markov_gradient"], strict=True):
        _close(g, w, np.abs(w).max())
    scale = np.abs(want["text_log_probs"]).max()  # a text's sigma is a difference of two such sums
    _close(got["text_log_probs"], want["text_log_probs"], scale)
    _close(got["text_sigmas"], want["text_sigmas"], scale)
    assert np.isfinite(want["text_sample"]).all() and len(want["text_sample"]) == 9
    _close(got["text_sample"], want["text_sample"], np.abs(want["text_sample"]).max())


def test_forced_devices_give_the_single_device_results(runs, oracle):
    forced = runs.json("forced")
    assert (forced["devices"], forced["processes"]) == (4, 1)
    _assert_same_results(forced, oracle)


def test_two_processes_give_the_single_process_results(runs, oracle):
    first, second = runs.json("process 0"), runs.json("process 1")
    assert (first["devices"], first["processes"]) == (second["devices"], second["processes"]) == (4, 2)
    assert first == second  # every process holds the same whole result, bit for bit
    _assert_same_results(first, oracle)


def test_the_multihost_example_runs_on_one_machine(runs):
    import epjax
    from epjax import kalman

    got = runs.json("example")
    assert (got["processes"], got["devices"]) == (2, 2)
    with jax.enable_x64(True):
        params = kalman.from_state_space(**{k: np.asarray(v, np.float64) for k, v in PAPER_2D.items()})
        est = epjax.entropy_production(jax.random.key(3), kalman.model, params, num_steps=5, num_samples=300,
                                       batch_size=64)
    assert got["num_samples"] == 300
    _close([got["mean"], got["stderr"]], [est.mean, est.stderr], np.abs(est.sigmas).max())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--local", "0"], "--local: expected a number of processes >= 1, got 0"),
        (["--local", "2", "--coordinator", "h:1"], "--local starts its own processes: leave out --coordinator"),
        (["--coordinator", "h:1", "--process-id", "0"], "--coordinator needs --num-processes"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id: expected 0 .. 1 (one id per process), got 2"),
        (["--num-samples", "1"], "--num-samples: expected an integer >= 2, got 1"),
    ],
)
def test_the_multihost_example_refuses_bad_arguments(argv, message):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "multihost.py"), *argv], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (omit for a single process)")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    if args.coordinator is not None:
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    print(json.dumps(compute()))


if __name__ == "__main__":
    _main()
