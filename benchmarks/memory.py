"""Peak memory and time of Monte Carlo EP for very many trajectories: ``keep_samples=False`` against the full run.

``epjax.entropy_production(key, kalman.model, params, num_steps=T, num_samples=N, batch_size=b,
keep_samples=...)`` on the EP paper's scalar Kalman example (``epjax.kalman.example("scalar")``, JAX's default
float32), N = 10^4 ... 10^8. Each (N, keep_samples) runs in a fresh Python process, so its peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own: the process imports epjax, makes one warm-up
call with N = b (compiles the batch), records its RSS, then times the call with N (one round for N >= 10^7,
three below). ``keep_samples=False`` keeps running float64 summaries only, so its peak should not grow with N;
the full run keeps every sigma (and the per-batch outputs it concatenates), tens of bytes per trajectory.
Each row also checks the number: z = (estimate - exact EP) / stderr, the exact EP from
``epjax.kalman.entropy_production``.

    python benchmarks/memory.py            # full run (N up to 10^8: minutes on 2 cores), appends to RESULTS.md
    python benchmarks/memory.py --quick    # smoke run, N = 10^4 and 10^5, prints only (add --out FILE to append)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    add_out_option,
    add_summary_option,
    fmt_rate,
    fmt_time,
    footer,
    header,
    log,
    prose,
    publish,
    summary_row,
    table,
    write_summary,
)

SCRIPT = "memory.py"
T = 10
BATCH = 2**16
SIZES = (10**4, 10**5, 10**6, 10**7, 10**8)
MAX_FULL = 10**7  # the full run at 10^8 would hold ~5 GB (see the notes); the machine is shared
TASK = {False: "Monte Carlo EP, keep_samples=False", True: "Monte Carlo EP, keep_samples=True"}


def _rss_mb() -> float:
    """The resident set size now, in MB (``VmRSS`` of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _power(n: int) -> str:
    """``10^k`` for a power of ten, else ``n`` with thousands separators."""
    k = len(str(n)) - 1
    return f"10^{k}" if n == 10**k else f"{n:,}"


def child(num_samples: int, keep: bool, batch_size: int) -> dict:
    """One measurement, in this (fresh) process: warm-up, RSS, timed rounds, peak RSS, the estimate."""
    import jax

    import epjax

    params = epjax.kalman.example("scalar")
    run = lambda n, seed: epjax.entropy_production(
        jax.random.key(seed), epjax.kalman.model, params, num_steps=T, num_samples=n, batch_size=batch_size,
        keep_samples=keep,
    )
    t0 = time.perf_counter()
    run(batch_size, 1)
    first = time.perf_counter() - t0
    after_warm_up = _rss_mb()
    times = []
    for _ in range(1 if num_samples >= 10**7 else 3):
        t0 = time.perf_counter()
        est = run(num_samples, 0)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    exact = float(epjax.kalman.entropy_production(params, T))
    return dict(N=num_samples, keep=keep, times=times, first=first, rss_warm_mb=after_warm_up, peak_mb=peak,
                mean=est.mean, stderr=est.stderr, exact=exact, has_samples=est.sigmas is not None)


def measure_in_subprocess(num_samples: int, keep: bool, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(num_samples), str(int(keep)), str(batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(int(argv[1]), bool(int(argv[2])), int(argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10^4 and 10^5, batch 2^14: a smoke run")
    parser.add_argument("--max-full", type=float, default=MAX_FULL,
                        help=f"largest N for the full run, keep_samples=True (default {MAX_FULL:.0e})")
    add_out_option(parser)
    add_summary_option(parser)
    args = parser.parse_args(argv)
    sizes, batch_size = ((10**4, 10**5), 2**14) if args.quick else (SIZES, BATCH)
    start = time.perf_counter()
    head = header(SCRIPT, ["benchmarks/memory.py", *argv], notes=[
        f"model: `epjax.kalman.example('scalar')` (float32), T = {T}, batch_size = {batch_size:,}",
        "each row: a fresh process; peak = `ru_maxrss` of that process (imports, the warm-up compile and the "
        "timed rounds included); time: one round for N >= 10^7, median of three below",
    ])
    results = []
    for n in sizes:
        for keep in (False, True):
            if keep and n > args.max_full:
                continue
            log(f"N = {n:,}, keep_samples={keep} ...")
            results.append(measure_in_subprocess(n, keep, batch_size))
            r = results[-1]
            log(f"  {r['times']} s, peak {r['peak_mb']:.0f} MB")
    rows, summary = [], []
    for r in results:
        median = sorted(r["times"])[len(r["times"]) // 2]
        z = (r["mean"] - r["exact"]) / r["stderr"]
        rows.append([
            f"{r['N']:,}", str(r["keep"]), f"{r['peak_mb']:.0f} MB", f"{r['rss_warm_mb']:.0f} MB",
            f"{r['peak_mb'] - r['rss_warm_mb']:+.0f} MB", fmt_time(median), fmt_rate(r["N"] / median),
            fmt_time(r["first"]), f"{r['mean']:.5f} ± {r['stderr']:.5f}", f"{r['exact']:.5f}", f"{z:+.2f}",
        ])
        summary.append(summary_row(
            SCRIPT, "kalman", TASK[r["keep"]], f"N = {_power(r['N'])}, T = {T}", r["times"],
            compile_s=max(r["first"] - median * batch_size / r["N"], 0.0), units=r["N"], unit="trajectories",
            note=f"peak RSS {r['peak_mb']:.0f} MB (fresh process)", peak_rss_mb=r["peak_mb"],
            rss_after_warm_up_mb=r["rss_warm_mb"],
        ))
    full = [r for r in results if r["keep"]]
    per_sample = ""
    if len(full) >= 2 and full[-1]["N"] < max(sizes):
        a, b = full[-2], full[-1]
        slope = (b["peak_mb"] - a["peak_mb"]) * 2**20 / (b["N"] - a["N"])
        per_sample = (f" The full run's peak grows by about {slope:.0f} bytes per trajectory (from its two largest "
                      f"N), so N = {_power(max(sizes))} would need about {slope * max(sizes) / 2**30:.1f} GB "
                      "more than its baseline.")
    text = prose(f"""Peak resident memory and time of one Monte Carlo EP call. "peak": the process's maximum RSS;
        "after warm-up": its RSS after the compiling call with N = batch_size (the JAX runtime and the compiled
        batch); "growth" = peak - after warm-up, what the call with N added. keep_samples=False holds running
        float64 sums, a ~1000-point running mean and one batch's outputs, whatever N is; the full run keeps the
        N values of sigma, the per-batch outputs and their concatenation, the running mean and e^-sigma.
        The full run goes up to N = {_power(int(min(args.max_full, max(sizes))))} (--max-full, default
        {_power(MAX_FULL)}: at 10^8 it needs several GB, on a machine shared with other jobs). Times on a loaded
        machine (see the load average) are rough; N smaller than one batch still computes the whole
        batch.{per_sample}""")
    head_row = ["N", "keep_samples", "peak RSS", "after warm-up", "growth", "time", "trajectories/s",
                "warm-up (compile)", "estimate ± stderr", "exact S", "z"]
    section = "\n\n".join([head, text, table(head_row, rows), footer(start)])
    publish(section, out=args.out, quick=args.quick)
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main()
