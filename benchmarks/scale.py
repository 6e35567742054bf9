"""What a nightly incremental run costs the driver as the archive grows, and whether it grows by night.

For each N: a Parquet list of N inputs (inventory style: uri, size, version) of which 1% are new
(tiny real JPEGs) and 99% are done (an `ok` manifest row each; their files need not exist, since
done inputs are never read). The real job runs in a process of its own with an embedded Ray and
a cheap stand-in model (random lite weights at 32 px) and is measured from outside:

* driver peak RSS (VmHWM of the job process),
* seconds from start to the first committed output (the first manifest part of the run),
* bytes pickled into each task of the listing and read stages,

and, without Ray, 30 simulated nights of the manifest (1% new rows a night in parts, then the
compaction every run ends with): seconds to load the done-index on the first and the last night.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from machine import machine  # benchmarks/machine.py, beside this file
from ray import cloudpickle

from birefnet_core.size import Size
from connectors.listing import item_id, open_parquet_list
from connectors.manifest import DoneIndex, compact_manifest, write_manifest_part
from connectors.storage import S3Options
from connectors.synthetic import encode_image, object_scene
from jobs.segment.driver import _SharedIndex
from jobs.segment.image_stages import FinishStage, ReadStage
from jobs.segment.rows import run_ref

REPO = Path(__file__).resolve().parents[1]
NEW_FRACTION = 0.01
ROWS_PER_PART = 16  # what a finish batch commits


def _uri(data: Path, i: int) -> str:
    return str(data / f"{i // 10_000:04d}" / f"img_{i:08d}.jpg")


def make_archive(work: Path, n: int) -> tuple[Path, int]:
    """The list, the new files, and a manifest in which every other input is done."""
    data = work / "data"
    new = max(1, int(n * NEW_FRACTION))
    photo = encode_image(object_scene(40, 32, seed=1))
    for i in range(n - new, n):
        path = Path(_uri(data, i))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo)
    uris = [_uri(data, i) for i in range(n)]
    versions = [f"v{i}" for i in range(n)]
    pq.write_table(
        pa.table({"uri": uris, "size": [len(photo)] * n, "version": versions}),
        work / "list.parquet",
        row_group_size=max(1, n // 8),
    )
    done = n - new
    run_id = "history"
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, done, 100_000):
        rows = [
            {"id": item_id(uris[i]), "source_uri": uris[i], "relative_path": uris[i].lstrip("/"),
             "source_version": versions[i], "status": "ok", "run_id": run_id, "processed_at": stamp}
            for i in range(start, min(done, start + 100_000))
        ]  # fmt: skip
        write_manifest_part(str(work / "out"), rows)
    compact_manifest(str(work / "out"))
    return work / "list.parquet", new


def _vm_hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_job(work: Path, listing: Path, timeout: float, full: bool) -> dict[str, float | int | None]:
    """The job as a user starts it; measured from outside."""
    out = work / "out"
    before = set((out / "manifest").glob("part-*.parquet"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    args = ["--input", str(listing), "--output", str(out), "--variant", "lite", "--weights", "random",
            "--resolution", "32", "--device", "cpu", "--batch-size", "16", "--max-failure-fraction", "1"]  # fmt: skip
    started = time.monotonic()
    log = (work / "job.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.segment", *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    first_commit, peak = None, 0
    while proc.poll() is None and time.monotonic() - started < timeout:
        peak = max(peak, _vm_hwm_bytes(proc.pid))
        if first_commit is None and set((out / "manifest").glob("part-*.parquet")) - before:
            first_commit = time.monotonic() - started
            if not full:
                deadline = time.monotonic() + 15  # a while past it, so the pipeline's steady state counts
                while proc.poll() is None and time.monotonic() < deadline:
                    peak = max(peak, _vm_hwm_bytes(proc.pid))
                    time.sleep(0.2)
                break
        time.sleep(0.2)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, 9)
        proc.wait()
    return {
        "driver_peak_rss_mb": round(peak / 2**20, 1),
        "seconds_to_first_commit": round(first_commit, 1) if first_commit is not None else None,
        "exit_code": proc.returncode if finished else None,
        "seconds_total": round(time.monotonic() - started, 1) if finished else None,
    }


def bytes_per_task(work: Path) -> dict[str, int]:
    """What Ray pickles into a listing task and a read task (the index travels by reference),
    next to what the old design pickled: the whole id -> version dict."""
    index = DoneIndex.load(str(work / "out"))
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        done = _SharedIndex(ray.put(index))
        s3 = S3Options()
        listing = open_parquet_list(str(work / "list.parquet"))
        finish = FinishStage(str(work / "out"), ["mask"], False, s3, run_ref("r", "lite", Size(32, 32)))
        sizes = {
            "listing_task": len(cloudpickle.dumps((listing, 0, s3, done))),
            "read_task": len(cloudpickle.dumps(ReadStage(s3, done, None))),
            "finish_task": len(cloudpickle.dumps(finish)),
        }
    finally:
        ray.shutdown()
    as_dict = {
        f"{k:016x}": f"{v:016x}" for k, v in zip(index.ids.tolist(), index.versions.tolist(), strict=True)
    }
    sizes["old_design_done_dict"] = len(cloudpickle.dumps(as_dict))
    return sizes


def simulated_nights(n: int, nights: int) -> dict[str, float | int]:
    """Done-index load time after each night of 1% new rows (in job-sized parts) + compaction."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out")
        per_night = max(1, int(n * NEW_FRACTION))
        total = n - per_night * nights
        stamp = datetime(2026, 1, 1, tzinfo=UTC)

        def rows(start: int, count: int, night: int) -> list[dict]:
            return [
                {"id": f"{i:016x}", "source_uri": f"/d/{i}.jpg", "source_version": "v", "status": "ok",
                 "run_id": f"night{night}", "processed_at": stamp + timedelta(days=night)}
                for i in range(start, start + count)
            ]  # fmt: skip

        for start in range(0, max(total, 0), 100_000):
            write_manifest_part(out, rows(start, min(100_000, total - start), 0))
        compact_manifest(out)
        loads = []
        for night in range(1, nights + 1):
            begin = max(total, 0) + (night - 1) * per_night
            for start in range(begin, begin + per_night, ROWS_PER_PART * 16):
                write_manifest_part(
                    out, rows(start, min(ROWS_PER_PART * 16, begin + per_night - start), night)
                )
            started = time.perf_counter()
            DoneIndex.load(out)
            loads.append(time.perf_counter() - started)
            compact_manifest(out)
        return {"nights": nights, "startup_load_s_night_1": round(loads[0], 3),
                "startup_load_s_night_last": round(loads[-1], 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600, help="seconds a job may run")
    parser.add_argument("--full", action="store_true", help="let every job finish (slow at 1M)")
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"scale-{n}-{uuid.uuid4().hex[:4]}-") as tmp:
            work = Path(tmp)
            started = time.perf_counter()
            listing, new = make_archive(work, n)
            result = {"inputs_listed": n, "new": new, "setup_s": round(time.perf_counter() - started, 1)}
            result |= bytes_per_task(work)
            result |= run_job(work, listing, args.timeout, args.full)
        result |= simulated_nights(n, args.nights)
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
