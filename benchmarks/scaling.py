"""Scale-out on torch.distributed: training steps/s and distance pairs/s with 1 and 2 processes.

Every configuration runs under ``torchrun --standalone`` (this script is its own
worker), one torch thread per process, in the same run, so the table's ratios
compare like with like:

* **training**: ``sg.train_score`` (dsm) on the bundled 8×8 digits (d = 64,
  NoiseConditionalMLP 64→256, 3 blocks), global batch ``--batch`` (split over
  the ranks), ``--steps`` steps after 20 warm-up steps; also one process with two
  threads, the other way to use both cores;
* **distances**: ``sg.pairwise_distances(..., distributed=True)`` of the
  default (``"auto"``) solver for the score metric of the symmetry-oracle
  mixture in d = 64 (λ = 10) between ``--points`` points, blocks of
  ``--block`` pairs written to a fresh directory.

Efficiency is (rate with P processes) / (P × rate with one). On this 2-core
machine two processes are the limit, and anything else running takes from
them: the load average is printed.

    .venv/bin/python benchmarks/scaling.py [--steps 200] [--batch 512] [--points 12] [--block 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import scoregeo as sg


# ----------------------------------------------------------------------------- workers (under torchrun)
def train_worker(args) -> dict:
    from scoregeo.scores.networks import NoiseConditionalMLP

    data = sg.datasets.digits(dtype=torch.float32)
    torch.manual_seed(0)
    common = dict(batch_size=args.batch, lr=1e-3, sigma_min=0.05, seed=0, progress=False)
    sg.train_score(data, "dsm", steps=20, network=NoiseConditionalMLP(64, hidden=256, n_blocks=3), **common)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    start = time.perf_counter()
    sg.train_score(data, "dsm", steps=args.steps, network=NoiseConditionalMLP(64, hidden=256, n_blocks=3), **common)
    return {"seconds": time.perf_counter() - start, "units": args.steps}


def distances_worker(args) -> dict:
    from scoregeo import oracles

    problem = oracles.default_problem(64, seed=0)
    metric = problem.metric(10.0)
    a, _ = oracles.problem_pairs(problem, args.points, seed=2)
    X = problem.lift(a)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        torch.distributed.init_process_group("gloo")
        torch.distributed.barrier()
    start = time.perf_counter()
    D = sg.pairwise_distances(metric, X, batch_size=args.block, progress=False, out_dir=args.blocks,
                              distributed=distributed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "units": args.points * (args.points - 1) // 2, "checksum": float(D.sum())}


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    result = train_worker(args) if args.worker == "train" else distances_worker(args)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def launch(kind: str, processes: int, threads: int, args, scratch: Path) -> dict:
    result = scratch / f"{kind}-{processes}x{threads}.json"
    blocks = scratch / f"blocks-{processes}x{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               __file__, "--worker", kind, "--threads", str(threads), "--result", str(result),
               "--steps", str(args.steps), "--batch", str(args.batch), "--points", str(args.points),
               "--block", str(args.block), "--blocks", str(blocks)]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"{kind} with {processes} process(es) failed:\n{run.stderr[-3000:]}")
    return json.loads(result.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--batch", type=int, default=512, help="global training batch")
    parser.add_argument("--points", type=int, default=12, help="points of the distance matrix")
    parser.add_argument("--block", type=int, default=3, help="pairs per block")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--worker", choices=["train", "distances"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--blocks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    lines = [
        "## Scale-out on torch.distributed (benchmarks/scaling.py)",
        "",
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torchrun "
        "--standalone, gloo",
        f"training: dsm on digits (d = 64), global batch {args.batch}, {args.steps} timed steps; distances: "
        f"auto solver, symmetry-oracle score metric d = 64, λ = 10, {args.points} points "
        f"({args.points * (args.points - 1) // 2} pairs), blocks of {args.block}",
        "",
        "| work | processes × threads | rate | speed-up over 1 × 1 | efficiency |",
        "|---|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for kind, unit in (("train", "steps/s"), ("distances", "pairs/s")):
            base = None
            checks = set()
            for processes, threads in ((1, 1), (2, 1), (1, 2)):
                result = launch(kind, processes, threads, args, Path(scratch))
                rate = result["units"] / result["seconds"]
                base = base or rate
                if "checksum" in result:
                    checks.add(result["checksum"])
                speedup = rate / base
                row = (f"| {kind} | {processes} × {threads} | {rate:.2f} {unit} | {speedup:.2f}× | "
                       f"{speedup / (processes * threads):.2f} |")
                lines.append(row)
                print(row, flush=True)
            if kind == "distances":
                spread = (max(checks) - min(checks)) / max(checks)
                note = ("- distances: the same matrix from every configuration (sum of entries identical)"
                        if len(checks) == 1 else
                        f"- distances: sums of the matrices differ by {spread:.1e} relative between configurations")
                lines.append(note)
                print(note)
    lines.append(f"- load average {os.getloadavg()[0]:.1f} at the end")
    print(lines[-1])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
