"""Training throughput of `birefnet train`: samples/s with 1 and 2 CPU workers (and 1 GPU when
present) on the same generated set; prints JSON naming the machine.

Run from the repository root: `.venv/bin/python benchmarks/train_speed.py`. Each configuration is
a real `python -m jobs.train` run with its own embedded Ray; the figure is the last epoch's
samples/s as the training loop reports it (the clock starts at each epoch's first batch, so
start-up is not counted). Random initial weights: speed only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from machine import machine  # benchmarks/machine.py, beside this file

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip().splitlines()[-1:]}")


def measure(data: str, output: str, name: str, workers: int, gpu: bool, args: argparse.Namespace) -> dict:
    cpus = max(1, (os.cpu_count() or 1) // workers)
    flags = [
        "jobs.train", "--data", data, "--output", output, "--name", name, "--backbone", args.backbone,
        "--resolution", str(args.size), "--batch-size", str(args.batch_size), "--num-workers", str(workers),
        "--cpus-per-worker", str(cpus), "--epochs", "2", "--val-fraction", "0", "--augmentations", "flip",
        "--log-every-steps", "1000", "--precision", args.precision,
    ]  # fmt: skip
    if gpu:
        flags.append("--use-gpu")
    _run(flags)
    summary = json.loads((Path(output) / name / "training.json").read_text())
    return {
        "workers": workers,
        "gpu": gpu,
        "threads_per_worker": cpus,
        "global_batch": args.batch_size * workers,
        "samples_per_second": round(summary["metrics"]["samples_per_second"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="swin_v1_demo")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4, help="per worker")
    parser.add_argument("--pairs", type=int, default=96, help="generated training pairs (one epoch)")
    parser.add_argument("--workers", default="1,2", help="CPU worker counts to measure")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as root:
        data = f"{root}/data"
        _run(["jobs.synthesize", "--output", data, "--count", str(args.pairs), "--seed", "11"])
        for workers in (int(w) for w in args.workers.split(",")):
            results.append(measure(data, f"{root}/runs", f"cpu{workers}", workers, False, args))
        if torch.cuda.is_available():
            results.append(measure(data, f"{root}/runs", "gpu1", 1, True, args))
    print(json.dumps({
        "benchmark": "train_speed",
        "machine": machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "backbone": args.backbone, "size": args.size, "precision": args.precision, "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
