"""The measuring habits every benchmark script shares: the machine's description, alternated timing, tables, output.

Imported by the scripts in this folder (``python benchmarks/<name>.py`` puts the folder on ``sys.path``). A script
builds its section as markdown: :func:`header` (date, device, versions, source, command, the script's own notes),
its tables (:func:`table` of cells formatted by :func:`fmt_time`, :func:`fmt_timing`, ...), then :func:`publish`
prints it and appends it to ``RESULTS.md`` (or ``--out``, added to the parser by :func:`add_out_option`).
Timings come from :func:`measure`: a warm-up call per job, then the jobs in alternation (round-robin), so that
other load on a shared machine falls on all of them alike; each script passes its own round counts. The
state-space models that kalman.py and gradients.py both time are :func:`paper_model` and :func:`random_model`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax
import numpy as np

import epjax

RESULTS = Path(__file__).with_name("RESULTS.md")
PREFACE = """\
# Benchmark results

Figures measured by the scripts in this folder (`python benchmarks/<name>.py`; see README.md). Every
section records the date, the device (CPU model, core count, `jax.devices()`), the library versions and the
exact command, and gives medians over repeats after a warm-up (compile) call, with the fastest repeat in
parentheses; a ratio to a peer is always measured in the same run on the same machine, the peers timed in
alternation. Figures from different sections or devices are not comparable with each other. Newest sections
are appended at the end.
"""

# ---------------------------------------------------------------------------------------------------- machine


def _cpuinfo(field: str) -> str | None:
    """The first ``field : value`` of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> str:
    """Which of the vector extensions that matter for XLA's CPU code the machine has."""
    flags = _cpuinfo("flags")
    if flags is None:
        return "flags unknown"
    present = set(flags.split())
    return ", ".join(f"{f} {'yes' if f in present else 'no'}" for f in ("avx2", "avx512f", "fma"))


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def git_revision() -> str:
    """``git describe --always --dirty`` of the checkout holding this script, or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"git {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else "unknown"


def header(script: str, argv: Sequence[str], *, peers: Sequence[ModuleType] = (), device: str = "",
           notes: Sequence[str] = ()) -> str:
    """The section's heading and provenance list: date, device, versions, epjax source, command, ``notes``.

    ``script``: the file name in ``benchmarks/``; ``peers``: modules whose versions are recorded besides
    python, jax, jaxlib, numpy and epjax (e.g. the peer library); ``device``: more about the device (a peer's
    thread count); ``notes``: the script's own list items (units, dtype, threads, sizes, ...).
    """
    import jaxlib

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = [
        f"python {platform.python_version()}",
        f"jax {jax.__version__}",
        f"jaxlib {jaxlib.__version__}",
        *(f"{m.__name__} {m.__version__}" for m in peers),
        f"numpy {np.__version__}",
        f"epjax {epjax.__version__}",
    ]
    lines = [
        f"## {now} — benchmarks/{script}",
        "",
        f"- device: CPU {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `jax.devices()` = "
        f"`{jax.devices()}`{'; ' + device if device else ''}; load average at start {load_average()}",
        f"- versions: {', '.join(versions)}",
        f"- epjax source: {git_revision()}",
        f"- command: `{shlex.join(['python', *argv])}`",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(lines)


def footer(start: float) -> str:
    """The closing line: run time since ``start`` (``time.perf_counter()``) and the load average now."""
    return f"Total run time {time.perf_counter() - start:.0f} s; load average at the end {load_average()}."


# ---------------------------------------------------------------------------------------------------- models


class StateSpace(NamedTuple):
    """A linear-Gaussian state-space model ``(A, C, Q, R)`` with the name its table rows carry."""

    name: str
    A: np.ndarray
    C: np.ndarray
    Q: np.ndarray
    R: np.ndarray

    @property
    def matrices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.A, self.C, self.Q, self.R

    def astype(self, dtype) -> StateSpace:
        return StateSpace(self.name, *(np.asarray(x, dtype) for x in self.matrices))


def paper_model(name: str) -> StateSpace:
    """One of the EP paper's examples, ``epjax.kalman.EXAMPLES[name]`` (docs/mathematics.md §5), float64."""
    label = {"scalar": "paper scalar (n=1, n_y=1)", "2d": "paper 2-D (n=2, n_y=2)"}[name]
    return StateSpace(label, **{k: np.asarray(v, np.float64) for k, v in epjax.kalman.EXAMPLES[name].items()})


def random_model(seed: int, n: int, n_y: int, radius: float = 0.9) -> StateSpace:
    """A random stable model with positive definite noise covariances (as tests/helpers.py)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    C = rng.normal(size=(n_y, n))
    Bq = rng.normal(size=(n, n))
    Br = rng.normal(size=(n_y, n_y))
    Q, R = Bq @ Bq.T + 0.1 * np.eye(n), Br @ Br.T + 0.1 * np.eye(n_y)
    return StateSpace(f"random (n={n}, n_y={n_y}, seed {seed})", A, C, Q, R)


# ---------------------------------------------------------------------------------------------------- output


def add_out_option(parser: argparse.ArgumentParser) -> None:
    """``--out FILE``: where :func:`publish` appends (the parser must also have ``--quick``)."""
    parser.add_argument(
        "--out",
        default=None,
        help=f"markdown file to append the section to (default: {RESULTS} for a full run; "
        "a --quick run only prints unless --out is given; '-' prints only)",
    )


def publish(section: str, *, out: str | None, quick: bool) -> None:
    """Print ``section``, then append it to ``out``: by default RESULTS.md for a full run, nowhere for a quick
    one; ``"-"`` prints only."""
    print(section)
    target = out if out is not None else (None if quick else str(RESULTS))
    if target and target != "-":
        append(section, Path(target))


def append(section: str, path: Path) -> None:
    """Append ``section`` to ``path`` after a blank line; a missing or empty file gets :data:`PREFACE` first."""
    previous = path.read_text() if path.exists() else ""  # read just before appending: other runs append too
    if not previous.strip():
        path.write_text(PREFACE)
        previous = PREFACE
    with path.open("a") as f:
        f.write(("" if previous.endswith("\n") else "\n") + "\n" + section + "\n")
    log(f"appended to {path}")


def log(msg: str) -> None:
    """Progress on stderr (the section goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def prose(text: str) -> str:
    """A triple-quoted paragraph as one line of markdown."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------------- timing


class Timing(NamedTuple):
    median: float  # median of the timed repeats
    best: float  # fastest repeat: the figure least disturbed by other load on a shared machine
    repeats: int
    first: float = 0.0  # the warm-up call: compile + one run (or a small run through a peer's code path)
    rounds: tuple[float, ...] = ()  # the timed repeats themselves, in order (for --summary-json)

    @classmethod
    def of(cls, times: Sequence[float], first: float = 0.0) -> Timing:
        return cls(statistics.median(times), min(times), len(times), first, tuple(float(t) for t in times))

    @property
    def compile(self) -> float:
        """Compile (and first-call) overhead: the warm-up call minus the steady-state median."""
        return max(self.first - self.median, 0.0)


class Job(NamedTuple):
    """One timed call of :func:`measure`."""

    run: Callable[[], object]  # the timed call
    warm: Callable[[], object] | None = None  # warm-up; None: one untimed call of ``run``
    max_repeats: int | None = None  # cap for this job (e.g. a peer that is very slow under load)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(fn(), seconds)``, blocking on the result."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def measure_rounds(
    jobs: Sequence[Job | Callable[[], object]],
    *,
    budget_s: float = 2.0,
    min_repeats: int = 3,
    max_repeats: int = 100,
    slow_first_s: float | None = 10.0,
) -> tuple[list[float], list[list[float]]]:
    """Warm up every job, then time them round-robin, blocking on every result (PyTorch on CPU is synchronous;
    ``jax.block_until_ready`` waits for JAX results). Returns each job's warm-up seconds and timed seconds.

    Alternation spreads other processes' load over all jobs alike, so their ratios are fairer than from
    back-to-back blocks. Rounds go on until ``min_repeats`` rounds and ``budget_s`` (summed over the jobs) are
    both reached, or ``max_repeats`` rounds; a job with its own ``max_repeats`` sits out later rounds. When a
    warm-up took over ``slow_first_s`` seconds, one round suffices (None: never).
    """
    jobs = [job if isinstance(job, Job) else Job(job) for job in jobs]
    firsts = [timed(job.warm or job.run)[1] for job in jobs]
    if slow_first_s is not None and max(firsts) > slow_first_s:
        min_repeats = 1
    times: list[list[float]] = [[] for _ in jobs]
    total, rounds = 0.0, 0
    while rounds < max_repeats and (rounds < min_repeats or total < budget_s):
        for job, ts in zip(jobs, times, strict=True):
            if job.max_repeats is not None and len(ts) >= job.max_repeats:
                continue
            ts.append(timed(job.run)[1])
            total += ts[-1]
        rounds += 1
    return firsts, times


def measure(jobs: Sequence[Job | Callable[[], object]], **kwargs) -> list[Timing]:
    """:func:`measure_rounds` summarised: a :class:`Timing` per job (its ``first`` is the warm-up call)."""
    firsts, times = measure_rounds(jobs, **kwargs)
    return [Timing.of(ts, first) for ts, first in zip(times, firsts, strict=True)]


def compile_timed(fn: Callable, *args, compiler_options: dict | None = None) -> tuple[Callable, float]:
    """``jax.jit(fn)`` compiled ahead of time for ``args``, and the seconds the compilation took."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=compiler_options).lower(*args).compile()
    return compiled, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------- formatting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def fmt_timing(t: Timing | None) -> str:
    """"median (best)"."""
    return "—" if t is None else f"{fmt_time(t.median)} ({fmt_time(t.best)})"


def fmt_rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.1f}"


def fmt_ratio(slow: Timing, fast: Timing) -> str:
    """Throughput of ``fast`` over ``slow``: from the medians (from the best times)."""
    return f"{slow.median / fast.median:.2f}× ({slow.best / fast.best:.2f}×)"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- summary rows
#
# ``--summary-json PATH``: every script can write the rows benchmarks/run.py gathers into the summary table at
# the top of RESULTS.md, a JSON list of objects with the keys of :func:`summary_row` (extra keys are allowed).


def add_summary_option(parser: argparse.ArgumentParser) -> None:
    """``--summary-json PATH``: where :func:`write_summary` writes the script's summary rows."""
    parser.add_argument(
        "--summary-json",
        default=None,
        metavar="PATH",
        help="also write this run's headline rows as JSON (the format benchmarks/run.py reads)",
    )


def _rounds(t: Timing | Sequence[float]) -> list[float]:
    if isinstance(t, Timing):
        if not t.rounds:
            raise ValueError(f"summary_row needs a Timing with its rounds (Timing.of), got {t!r}")
        return list(t.rounds)
    return [float(x) for x in t]


def summary_row(
    script: str,
    family: str,
    task: str,
    size: str,
    epjax: Timing | Sequence[float],
    peer: str | None = None,
    peer_times: Timing | Sequence[float] | None = None,
    *,
    compile_s: float | None = None,
    flops: float | None = None,
    units: float | None = None,
    unit: str | None = None,
    note: str = "",
    **extra,
) -> dict:
    """One summary row: epjax's seconds per timed round and, with a peer, the peer's seconds in the same rounds.

    The two lists are paired round by round (they were timed in alternation); where a peer sat out later
    rounds (a per-job cap), both are cut to the rounds they share. ``flops``: of one epjax call; ``units``:
    work items per call (tokens, steps, trajectories) named by ``unit``.
    """
    if (peer is None) != (peer_times is None):
        raise ValueError(f"summary_row: give both peer and peer_times or neither, got {peer!r} and {peer_times!r}")
    epjax_s = _rounds(epjax)
    peer_s = None
    if peer_times is not None:
        peer_s = _rounds(peer_times)
        shared = min(len(epjax_s), len(peer_s))
        epjax_s, peer_s = epjax_s[:shared], peer_s[:shared]
    return {
        "script": script,
        "family": family,
        "task": task,
        "size": size,
        "epjax_s": epjax_s,
        "peer": peer,
        "peer_s": peer_s,
        "compile_s": None if compile_s is None else float(compile_s),
        "flops": None if flops is None else float(flops),
        "units": None if units is None else float(units),
        "unit": unit,
        "note": note,
        **extra,
    }


def write_summary(path: str | None, rows: Sequence[dict]) -> None:
    """Write ``rows`` to ``path`` as a JSON list (nothing when ``path`` is None)."""
    if path is None:
        return
    import json

    Path(path).write_text(json.dumps(list(rows), indent=1) + "\n")
    log(f"summary rows written to {path}")
