"""`make gpu-check`: every `gpu`-marked test, then the GPU benchmark in a configuration sized to fit
a lent GPU's few minutes, as one JSON summary (GPU name, test counts and failures, figures).

Run from the repository root: `.venv/bin/python benchmarks/gpu_check.py [--out DIR]`. Exit status 1
when a test failed or the benchmark crashed; without CUDA the tests skip, the benchmark says so,
and the summary's `gpu` is null. Each step has its own time limit, so one hang cannot eat the
machine's whole loan: about 8 minutes in all on one H100 by design (tests ~3, benchmark ~4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from machine import machine  # benchmarks/machine.py, beside this file

REPO = Path(__file__).resolve().parents[1]
#: The benchmark's bounded configuration: both variants, the two half precisions, eager and
#: CUDA graphs (compile is minutes per variant), a short batch sweep and a small end-to-end job.
THROUGHPUT_ARGS = [
    "--variants", "lite,general", "--dtypes", "float16,bfloat16", "--backends", "eager,cuda_graphs",
    "--sweep", "1,4,8", "--repeats", "3", "--e2e-images", "32",
]  # fmt: skip


def gpu_tests(out: Path, timeout: float) -> dict[str, Any]:
    """`pytest -m gpu`, counted from its JUnit report: passed, failed, skipped, and each failure."""
    report = out / "gpu_tests.xml"
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:randomly", f"--junitxml={report}"],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {
            "error": f"pytest -m gpu ran past {timeout:.0f} s",
            "seconds": round(time.perf_counter() - started),
        }
    (out / "gpu_tests.log").write_text(done.stdout + done.stderr)
    counts: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    if not report.exists():
        return {"error": f"pytest -m gpu exited {done.returncode} without a report: {done.stderr[-500:]}"}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure")
        problem = problem if problem is not None else case.find("error")
        if problem is not None:
            counts["failed"] += 1
            counts["failures"].append({"test": name, "message": (problem.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    counts["seconds"] = round(time.perf_counter() - started)
    return counts


def throughput(timeout: float) -> dict[str, Any]:
    """benchmarks/gpu_throughput.py in the bounded configuration; its JSON, or what went wrong."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), *THROUGHPUT_ARGS],
            cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"gpu_throughput.py ran past {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": f"gpu_throughput.py exited {done.returncode}: {done.stderr[-1000:]}"}
    result: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    result["seconds"] = round(time.perf_counter() - started)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "gpu_check_output", help="logs and the JUnit report"
    )
    parser.add_argument("--tests-timeout", type=float, default=240)
    parser.add_argument("--benchmark-timeout", type=float, default=240)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tests = gpu_tests(args.out, args.tests_timeout)
    figures = throughput(args.benchmark_timeout)
    summary = {
        "check": "gpu",
        "gpu": figures.get("gpu"),
        "machine": machine(),
        "tests": tests,
        "throughput": figures,
    }
    text = json.dumps(summary, indent=1)
    (args.out / "gpu_check.json").write_text(text)
    print(text)
    return 1 if tests.get("failed") or "error" in tests or "error" in figures else 0


if __name__ == "__main__":
    raise SystemExit(main())
