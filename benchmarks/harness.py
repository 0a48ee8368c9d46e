"""The measuring habits every benchmark script shares: the machine's description, alternated timing, tables.

Imported by the scripts in this folder (``python benchmarks/<name>.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax

# ---------------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """Which of the vector extensions that matter for XLA's CPU code the machine has."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f"))
    except OSError:
        pass
    return "flags unknown"


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


# ---------------------------------------------------------------------------------------------------- timing


class Timing(NamedTuple):
    median: float
    best: float
    repeats: int


def compile_timed(fn: Callable, *args) -> tuple[Callable, float]:
    """``jax.jit(fn)`` compiled ahead of time for ``args``, and the seconds the compilation took."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def measure_pair(
    fns: list[Callable[[], object]], *, budget_s: float = 2.0, min_repeats: int = 3, max_repeats: int = 100
) -> list[Timing]:
    """Time ``fns`` round-robin after one warm-up call each, blocking on every result.

    Alternation spreads other load on a shared machine over all of them alike, so their ratio is fairer than
    from back-to-back blocks. Rounds continue until ``min_repeats`` and ``budget_s`` are both reached; one round
    when a warm-up call took over 10 s.
    """
    warm = []
    for fn in fns:
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        warm.append(time.perf_counter() - t0)
    if max(warm) > 10.0:
        min_repeats = 1
    times: list[list[float]] = [[] for _ in fns]
    total = 0.0
    while len(times[0]) < max_repeats and (len(times[0]) < min_repeats or total < budget_s):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
            total += ts[-1]
    return [Timing(statistics.median(ts), min(ts), len(ts)) for ts in times]


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_timing(t: Timing) -> str:
    return f"{fmt_time(t.median)} ({fmt_time(t.best)})"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def prose(text: str) -> str:
    return " ".join(text.split())
