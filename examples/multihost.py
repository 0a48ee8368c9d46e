"""Monte Carlo entropy production of a Kalman model across processes and hosts (``jax.distributed``).

Every process runs this same script: one per host (all of a host's GPUs, or a TPU host's chips, belong to
its process). After ``jax.distributed.initialize``, ``jax.devices()`` lists the devices of every process, and
epjax splits each compiled batch of trajectories over all of them; every process ends with the same whole
Estimate, equal to a single process's for the same key. Process 0 prints it.

On one machine (the script starts N CPU processes itself, joined by a coordinator on localhost)::

    python examples/multihost.py --local 2
    python examples/multihost.py --local 2 --devices-per-process 4

On hosts you start yourself (process 0's address as the coordinator, ids 0 .. N-1)::

    python examples/multihost.py --coordinator host0:1234 --num-processes 2 --process-id 0   # on host0
    python examples/multihost.py --coordinator host0:1234 --num-processes 2 --process-id 1   # on host1

Under SLURM, Open MPI or on a Cloud TPU pod, without arguments: ``jax.distributed.initialize()`` reads the
coordinator, the number of processes and this process's id from the environment::

    srun --nodes=2 --ntasks-per-node=1 python examples/multihost.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

# The paper's two-dimensional example (docs/mathematics.md): A, C, Q, R.
A = [[0.8, 0.3], [0.0, 0.5]]
C = [[1.0, 0.5], [0.0, 1.0]]
Q = [[1.0, 0.0], [0.0, 1.0]]
R = [[1.0, 0.0], [0.0, 1.0]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked (argparse exits with status 2 and a message naming the option)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--local", type=int, metavar="N", help="start N processes on this machine and join them")
    parser.add_argument("--devices-per-process", type=int, default=1, metavar="K",
                        help="with --local: CPU devices of each process (default 1)")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (omit to auto-detect)")
    parser.add_argument("--num-processes", type=int, help="with --coordinator: number of processes")
    parser.add_argument("--process-id", type=int, help="with --coordinator: this process's id, 0 .. N-1")
    parser.add_argument("--num-steps", type=int, default=20, help="trajectory length T (default 20)")
    parser.add_argument("--num-samples", type=int, default=100_000, help="trajectories N (default 100000)")
    parser.add_argument("--batch-size", type=int, default=4096, help="trajectories per compiled batch")
    parser.add_argument("--seed", type=int, default=0, help="the key is jax.random.key(seed)")
    parser.add_argument("--json", action="store_true", help="print the Estimate as one JSON line")
    args = parser.parse_args(argv)
    for name, low in (("local", 1), ("devices_per_process", 1), ("num_steps", 1), ("num_samples", 2),
                      ("batch_size", 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            what = "a number of processes" if name == "local" else "an integer"
            parser.error(f"--{name.replace('_', '-')}: expected {what} >= {low}, got {value}")
    if args.local is not None and args.coordinator is not None:
        parser.error("--local starts its own processes: leave out --coordinator")
    if args.coordinator is not None:
        for name in ("num_processes", "process_id"):
            if getattr(args, name) is None:
                parser.error(f"--coordinator needs --{name.replace('_', '-')}")
        if args.num_processes < 1:
            parser.error(f"--num-processes: expected an integer >= 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            parser.error(
                f"--process-id: expected 0 .. {args.num_processes - 1} (one id per process), got {args.process_id}"
            )
    return args


def run_local(args: argparse.Namespace) -> int:
    """Start ``args.local`` processes of this script on localhost; the exit status of the first that fails."""
    with socket.socket() as sock:  # a free port for the coordinator
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={args.devices_per_process}")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags)}
    same = ["--coordinator", f"localhost:{port}", "--num-processes", str(args.local)]
    for name in ("num_steps", "num_samples", "batch_size", "seed"):
        same += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    same += ["--json"] if args.json else []
    procs = [subprocess.Popen([sys.executable, __file__, *same, "--process-id", str(i)], env=env)
             for i in range(args.local)]
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:  # the others would wait for the lost process until the coordinator's timeout
                return failed[0]
            time.sleep(0.1)
        return next((p.returncode for p in procs if p.returncode != 0), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> int:
    """Join the processes, estimate the EP on all of them, print it on process 0; the exit status."""
    args = parse_args(argv)
    if args.local is not None:
        return run_local(args)

    import jax

    if args.coordinator is not None:
        jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    else:
        jax.distributed.initialize()  # SLURM, Open MPI, Cloud TPU: read from the environment

    import numpy as np
    from jax.experimental import multihost_utils

    import epjax

    with jax.enable_x64(True):
        params = epjax.kalman.from_state_space(A, C, Q, R)
        est = epjax.entropy_production(
            jax.random.key(args.seed), epjax.kalman.model, params, num_steps=args.num_steps,
            num_samples=args.num_samples, batch_size=args.batch_size,
        )
        # Every process holds the same whole Estimate (checked here across processes, bit for bit).
        multihost_utils.assert_equal(np.array([est.mean, est.stderr]), "the processes' Estimates differ")
    if jax.process_index() == 0:
        where = {"processes": jax.process_count(), "devices": len(jax.devices())}
        if args.json:
            print(json.dumps({**where, "num_steps": args.num_steps, "num_samples": est.num_samples,
                              "mean": est.mean, "stderr": est.stderr}))
        else:
            print(f"{where['processes']} processes, {where['devices']} {jax.default_backend()} devices; "
                  f"T={args.num_steps}, N={est.num_samples}")
            print(f"EP = {est.mean:.6f} +/- {est.stderr:.6f} nats (95% interval [{est.ci_low:.6f}, "
                  f"{est.ci_high:.6f}])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
