"""The whole benchmark suite in one command, with a summary table at the top of RESULTS.md.

Runs every script of this folder as its own process (``python benchmarks/<name>.py [--quick] --summary-json
ROWS --out SECTION``, so each keeps its own XLA flags and threads), in a fixed order, the matmul peak first
(benchmarks/peak.py) and, after two or more other scripts, again last (the peak is the higher of the two: the
load of a shared machine changes over a long run); then writes, between the markers ``<!-- summary:start -->``
and ``<!-- summary:end -->`` right after RESULTS.md's title paragraph, a summary of this run (replacing the
previous one; every other section stays), and appends the scripts' detailed sections at the end.

The summary has the machine (CPU model, AVX2 / AVX-512 / FMA, cores), the versions, the load average at the
start and the end, the measured matmul peaks, and one row per family, task and size from the scripts'
``--summary-json`` rows: epjax's median (best) time, the compile time, the peer and its median (best) timed in
the same rounds, the ratio peer ÷ epjax (> 1: epjax faster) as the median over rounds with its range, the
achieved GFLOP/s and the fraction of the matmul peak where the FLOPs are known, and the target:

- a peer: epjax at least 1.5× faster (median ratio ≥ 1.5; llama.cpp: ≥ 1.0);
- ``peak_target`` (Transformer and SmolLM2 scoring on large batches): achieved FLOP/s ≥ that fraction of the
  measured float32 matmul peak;
- ``target_s``: the median under that many seconds.

A row that misses its target points to the profile that shows why, where RESULTS.md has one (``PROFILES``).

    python benchmarks/run.py                      # everything; summary at the top of RESULTS.md, sections appended
    python benchmarks/run.py --quick --out -      # the smoke suite (a few minutes), printed only
    python benchmarks/run.py --only kalman,neural # some scripts (peak is always measured unless --no-peak)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness import PREFACE, RESULTS, append, cpu_flags, cpu_model, fmt_time, git_revision, load_average, log, table
from peak import peak_of

HERE = Path(__file__).resolve().parent
SCRIPTS = ("peak", "kalman", "neural", "lm", "gradients", "aot", "scan", "memory", "llamacpp", "coldstart")
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
SECTION_MARK = "<!-- benchmarks/run.py: section -->\n"  # keeps harness.append from writing its preface
REQUIRED = ("script", "family", "task", "size", "epjax_s", "peer", "peer_s")
PEER_TARGET = 1.5
PEER_TARGETS = {"llamacpp": 1.0}  # per script; every other peer: PEER_TARGET
VERSIONS = ("jax", "jaxlib", "numpy", "flax", "optax", "torch", "transformers", "dynamax", "epjax")
# (script, family) -> the heading of the profile in RESULTS.md that shows why a target is missed
PROFILES = {
    ("neural", "lstm"): "Profile: LSTM scoring against PyTorch",
    ("llamacpp", "SmolLM2-135M (GGUF)"): "(5) Profile: why epjax's sampling is slower than llama.cpp's",
}


# ---------------------------------------------------------------------------------------------------- rows


def check_rows(rows: object, source: str) -> list[dict]:
    """``rows`` as a list of summary rows; a clear error naming ``source`` and the row otherwise."""
    if not isinstance(rows, list):
        raise ValueError(f"{source}: summary rows must be a JSON list, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: row {i} must be an object, got {row!r}")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"{source}: row {i} lacks {', '.join(missing)} (has {', '.join(row)})")
        if not row["epjax_s"] or not all(isinstance(t, (int, float)) and t > 0 for t in row["epjax_s"]):
            raise ValueError(f"{source}: row {i} epjax_s must be positive seconds, got {row['epjax_s']!r}")
        if (row["peer"] is None) != (row["peer_s"] is None):
            raise ValueError(f"{source}: row {i} needs peer and peer_s together, got {row['peer']!r} and "
                             f"{row['peer_s']!r}")
        if row["peer_s"] is not None and len(row["peer_s"]) != len(row["epjax_s"]):
            raise ValueError(f"{source}: row {i} peer_s has {len(row['peer_s'])} rounds, epjax_s "
                             f"{len(row['epjax_s'])}; they must be the same rounds")
    return rows


def ratios(row: dict) -> list[float] | None:
    """Peer ÷ epjax, round by round (> 1: epjax faster); None without a peer."""
    if row["peer_s"] is None:
        return None
    return [p / e for p, e in zip(row["peer_s"], row["epjax_s"], strict=True)]


def judge(row: dict, peaks: dict[str, float | None]) -> tuple[bool | None, list[str]]:
    """Whether ``row`` meets its targets (None: it has none) and what each target asked and got."""
    checks: list[tuple[bool, str]] = []
    r = ratios(row)
    if r is not None:
        # A row may set its own target_ratio; None: the "peer" is a contrast, not a tool to beat (coldstart.py)
        want = row["target_ratio"] if "target_ratio" in row else PEER_TARGETS.get(row["script"], PEER_TARGET)
        if want is not None:
            checks.append((statistics.median(r) >= want, f"≥ {want:g}× peer"))
    if row.get("target_s") is not None:
        checks.append((statistics.median(row["epjax_s"]) <= row["target_s"], f"≤ {row['target_s']:g} s"))
    if row.get("peak_target") is not None:
        peak = peaks.get(row.get("dtype", "float32"))
        if row.get("flops") and peak:
            frac = row["flops"] / statistics.median(row["epjax_s"]) / peak
            checks.append((frac >= row["peak_target"], f"≥ {row['peak_target']:.0%} of peak"))
    if not checks:
        return None, []
    return all(ok for ok, _ in checks), [f"{what} {'✓' if ok else '✗'}" for ok, what in checks]


# ---------------------------------------------------------------------------------------------------- rendering


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    keep = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return "#" + keep.replace(" ", "-")


def render_rows(rows: Sequence[dict], peaks: dict[str, float | None]) -> str:
    """The summary table of ``rows`` (peak rows are left out: they are the yardstick, given above the table)."""
    out = []
    for row in rows:
        if row.get("kind") == "peak":
            continue
        e = row["epjax_s"]
        med = statistics.median(e)
        r = ratios(row)
        ratio = "—" if r is None else f"**{statistics.median(r):.2f}×** [{min(r):.2f}–{max(r):.2f}]"
        peer_time = "—" if row["peer_s"] is None else f"{fmt_time(statistics.median(row['peer_s']))} " \
                                                      f"({fmt_time(min(row['peer_s']))})"
        rate = frac = "—"
        if row.get("flops"):
            achieved = row["flops"] / med
            rate = f"{achieved / 1e9:.2f}"
            peak = peaks.get(row.get("dtype", "float32"))
            if peak:
                frac = f"{achieved / peak:.1%}"
        met, what = judge(row, peaks)
        if met is None:
            target = "—"
        elif met:
            target = "met (" + ", ".join(what) + ")"
        else:
            profile = PROFILES.get((row["script"], row["family"]))
            pointer = f"; profile: [{profile}]({anchor(profile)})" if profile else ""
            target = "**missed** (" + ", ".join(what) + ")" + pointer
        cells = [row["script"], row["family"], row["task"], row["size"], f"{fmt_time(med)} ({fmt_time(min(e))})",
                 fmt_time(row.get("compile_s")), row["peer"] or "—", peer_time, ratio, rate, frac, target,
                 row.get("note") or ""]
        out.append([c.replace("|", "\\|") for c in cells])  # a "|" inside a cell would split it
    head = ["script", "family", "task", "size", "epjax median (best)", "compile", "peer", "peer median (best)",
            "peer ÷ epjax: median [min–max over rounds]", "GFLOP/s", "% of matmul peak", "target", "note"]
    return table(head, out)


def versions() -> str:
    found = [f"python {platform.python_version()}"]
    for name in VERSIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def render_summary(rows: Sequence[dict], *, command: str, load_start: str, load_end: str, runs: Sequence[str],
                   when: str | None = None) -> str:
    """The summary block: heading, machine, versions, load, peaks, scripts run, the table and the verdict."""
    peaks = {d: peak_of(rows, d) for d in ("float32", "float64")}
    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peak_text = ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items() if p) or "not measured"
    table_rows = [r for r in rows if r.get("kind") != "peak"]
    judged = [judge(r, peaks)[0] for r in table_rows]
    over = [r for r in table_rows if r.get("flops") and peaks.get(r.get("dtype", "float32"))
            and r["flops"] / statistics.median(r["epjax_s"]) > peaks[r.get("dtype", "float32")]]
    met, missed = sum(j is True for j in judged), sum(j is False for j in judged)
    lines = [
        f"## Summary — {when}, `{command}`",
        "",
        f"- machine: CPU {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores",
        f"- versions: {versions()}; epjax source {git_revision()}",
        f"- load average (1, 5, 15 min): at the start {load_start}; at the end {load_end}",
        f"- measured matmul peak (benchmarks/peak.py: the highest rate of `jnp.dot` and numpy in a fastest round): "
        f"{peak_text}",
        f"- scripts: {'; '.join(runs)}",
        f"- targets: {met} met, {missed} missed, {len(judged) - met - missed} rows without one. A peer row's target "
        f"is a median ratio ≥ {PEER_TARGET:g}× (llama.cpp ≥ 1.0×); Transformer and SmolLM2 scoring on large "
        "batches also ≥ 50 % of the float32 matmul peak. Ratios are peer time ÷ epjax time per round (the two "
        "timed in alternation; > 1: epjax faster), median [min–max over rounds]; GFLOP/s = analytic FLOPs of "
        "one call (benchmarks/peak.py) ÷ epjax's median time. Detailed sections of this run follow at the end "
        "of the file.",
        *([f"- **caution**: {len(over)} row(s) exceed 100 % of the measured peak: the peak was measured under "
           "heavier load than those rows ran under (compare the load averages in the sections), so every fraction "
           "of it here is too high; rerun on a quiet machine."] if over else []),
        "",
        render_rows(table_rows, peaks),
    ]
    return "\n".join(lines)


def replace_summary(text: str, block: str) -> str:
    """``text`` with the summary block (between :data:`START` and :data:`END`) replaced by ``block``, or inserted
    before the first section (``## ``) when there is none; everything else is kept as it was."""
    wrapped = f"{START}\n{block.strip()}\n{END}\n"
    if START in text and END in text and text.index(START) < text.index(END):
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + wrapped + ("\n" + tail if tail else "")
    at = text.find("\n## ")
    if at < 0:
        return text.rstrip("\n") + "\n\n" + wrapped
    return text[: at + 1] + wrapped + "\n" + text[at + 1 :]


# ---------------------------------------------------------------------------------------------------- running


def run_script(name: str, quick: bool, workdir: Path, timeout: float | None,
               extra: Sequence[str] = ()) -> tuple[list[dict], str, str]:
    """Run ``benchmarks/<name>.py`` (with ``extra`` arguments): its summary rows, its section and a status line."""
    stem = name
    while (workdir / f"{stem}.json").exists() or (workdir / f"{stem}.md").exists():
        stem += "_again"
    rows_path, section_path = workdir / f"{stem}.json", workdir / f"{stem}.md"
    section_path.write_text(SECTION_MARK)
    cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else []), *extra, "--summary-json",
           str(rows_path), "--out", str(section_path)]
    log(f"run.py: {shlex.join(cmd)}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, stdout=subprocess.DEVNULL, timeout=timeout)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        rc = f"timed out after {timeout:g} s"
    seconds = time.perf_counter() - t0
    section = section_path.read_text().replace(SECTION_MARK, "").strip()
    rows = check_rows(json.loads(rows_path.read_text()), str(rows_path)) if rows_path.exists() else []
    status = f"{name} ({seconds:.0f} s" + ("" if rc == 0 else f", **failed: {rc}**") + ")"
    return rows, section, status


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every script's --quick: the smoke suite")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated scripts, a subset of {','.join(SCRIPTS)} (default: all present)")
    parser.add_argument("--no-peak", action="store_true", help="skip peak.py (no %% of peak in the table)")
    parser.add_argument("--out", default=str(RESULTS),
                        help=f"markdown file for the summary and the sections (default {RESULTS}); '-' prints only")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per script (default: none)")
    parser.add_argument("--rows-json", default=None, metavar="PATH",
                        help="also keep every summary row of this run in PATH (to re-render the table)")
    parser.add_argument("--pass", dest="passed", action="append", default=[], metavar="NAME:ARGS",
                        help="more arguments for one script, e.g. --pass 'neural:--repeats 1' (repeatable)")
    args = parser.parse_args(argv[1:])
    extra: dict[str, list[str]] = {}
    for item in args.passed:
        name, sep, rest = item.partition(":")
        if not sep or name not in SCRIPTS:
            parser.error(f"--pass takes NAME:ARGS with NAME one of {','.join(SCRIPTS)}, got {item!r}")
        extra.setdefault(name, []).extend(shlex.split(rest))
    chosen = list(SCRIPTS)
    if args.only:
        chosen = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in SCRIPTS]
        if unknown or not chosen:
            parser.error(f"--only takes script names from {','.join(SCRIPTS)}, got {args.only!r}")
        if not args.no_peak and "peak" not in chosen:
            chosen.insert(0, "peak")
    chosen = [s for s in SCRIPTS if s in chosen and not (args.no_peak and s == "peak")]
    missing = [s for s in chosen if not (HERE / f"{s}.py").exists()]
    chosen = [s for s in chosen if s not in missing]
    if "peak" in chosen and len(chosen) > 2:
        chosen.append("peak")  # again at the end: the load may differ, and the peak is the higher of the two

    load_start, start = load_average(), time.perf_counter()
    rows: list[dict] = []
    sections: list[str] = []
    runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="epjax-bench-") as tmp:
        for name in chosen:
            got, section, status = run_script(name, args.quick, Path(tmp), args.timeout, extra.get(name, ()))
            rows += got
            runs.append(status)
            if section:
                sections.append(section)
    if args.rows_json:
        Path(args.rows_json).write_text(json.dumps(rows, indent=1) + "\n")
    runs += [f"{s} (not present)" for s in missing]
    runs.append(f"total {math.ceil(time.perf_counter() - start)} s")
    block = render_summary(rows, command=shlex.join(["python", *argv]), load_start=load_start,
                           load_end=load_average(), runs=runs)
    if args.out == "-":
        print(block + "\n\n" + "\n\n".join(sections))
        return
    path = Path(args.out)
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        text = PREFACE
    path.write_text(replace_summary(text, block))
    for section in sections:
        append(section, path)
    log(f"run.py: summary written to the top of {path}, {len(sections)} section(s) appended")


if __name__ == "__main__":
    main()
