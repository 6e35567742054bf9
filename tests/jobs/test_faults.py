"""Faults in the middle of a run, on a real local Ray and a real SeaweedFS.

Each job runs as users start it, in a process (and process group) of its own with its own
embedded Ray, so a test can kill its driver or its inference actor, or stop the store under it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.listing import item_id
from connectors.manifest import latest_rows, read_manifest
from connectors.storage import S3Options
from connectors.synthetic import encode_image, object_scene
from jobs.common.errors import EXIT_JOB_ERROR, EXIT_OK
from tests.support.ray_cluster import kill_processes_with_env, pids_with_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PHOTOS = 80
FLAGS = ["--variant", "lite", "--weights", "random", "--resolution", "96", "--device", "cpu",
         "--batch-size", "2", "--num-cpus", "2", "--object-store-memory", str(120 * 1024**2)]  # fmt: skip


def _photos() -> dict[str, bytes]:
    return {f"p/{i:03d}.jpg": encode_image(object_scene(64 + i % 5, 48, seed=i)) for i in range(PHOTOS)}


def _env(extra: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    marker = f"BIREFNET_FAULT_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "AWS_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", AWS_EC2_METADATA_DISABLED="true")
    env.update(dict([marker.split("=", 1)]), **(extra or {}))
    return env, marker


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.segment", *args, *FLAGS],
            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _finish(proc: subprocess.Popen, marker: str, log: Path, timeout: float = 300) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_processes_with_env(marker, cmdline_contains="ray")
        print(log.read_text()[-3000:])


def _committed(out: str, s3: S3Options | None = None) -> int:
    try:
        return read_manifest(out, s3).num_rows
    except FileNotFoundError:
        return 0


def _wait_for_first_commit(out: str, s3: S3Options | None = None) -> None:
    _wait(lambda: _committed(out, s3) > 0, 180, "the first committed batch")


def _check_complete(out: str, s3: S3Options | None = None) -> list[dict]:
    """Every input exactly once among the newest rows, each ok."""
    latest = latest_rows(read_manifest(out, s3)).to_pylist()
    assert sorted(r["relative_path"] for r in latest) == sorted(_photos())
    assert {r["status"] for r in latest} == {"ok"}, [r["error"] for r in latest if r["error"]][:3]
    return latest


def _no_leftovers(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.name.endswith(".tmp")], "temporary files left"
    masks = {p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")}
    assert masks == {Path(name).with_suffix(".png").as_posix() for name in _photos()}


def _local_input(tmp_path: Path) -> Path:
    for name, data in _photos().items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    return tmp_path / "in"


def test_killing_the_inference_actor_mid_run_loses_and_repeats_nothing(tmp_path):
    src, out, log = _local_input(tmp_path), tmp_path / "out", tmp_path / "job.log"
    env, marker = _env()
    proc = _start(["--input", str(src), "--output", str(out)], env, log)
    try:
        _wait_for_first_commit(str(out))
        actors = pids_with_env(marker, cmdline_contains="InferenceStage")
        assert actors, "no inference actor found"
        for pid in actors:
            os.kill(pid, signal.SIGKILL)
        committed_at_kill = _committed(str(out))
    finally:
        code = _finish(proc, marker, log)
    assert code == EXIT_OK
    assert committed_at_kill < PHOTOS, "the run ended before the actor was killed; make it longer"
    _check_complete(str(out))
    _no_leftovers(out)


def test_a_model_that_fails_on_good_batches_stops_the_job_instead_of_failing_its_inputs(tmp_path):
    """A broken GPU or model is the job's problem: exit 2 with one line, no input marked failed;
    an undecodable file beside the photos still gets its one error row from the CPU stages."""
    src, out, log = _local_input(tmp_path), tmp_path / "out", tmp_path / "job.log"
    (src / "p" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    broken_model = str(REPO / "tests" / "support" / "broken_model")
    env, marker = _env({"BIREFNET_BROKEN_MODEL_TEST": "1", "PYTHONPATH": broken_model})
    code = _finish(_start(["--input", str(src), "--output", str(out)], env, log), marker, log)
    text = log.read_text()
    assert code == EXIT_JOB_ERROR, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "illegal memory access" in errors[0], text[-3000:]
    rows = read_manifest(str(out)).to_pylist() if (out / "manifest").exists() else []
    assert all(
        row["id"] == item_id(str(src / "p" / "broken.jpg")) for row in rows if row["status"] == "error"
    )


def test_killing_the_driver_then_rerunning_completes_the_union(tmp_path):
    src, out, log = _local_input(tmp_path), tmp_path / "out", tmp_path / "job.log"
    env, marker = _env()
    proc = _start(["--input", str(src), "--output", str(out)], env, log)
    try:
        _wait_for_first_commit(str(out))
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        _finish(proc, marker, log)
    first = {r["id"] for r in read_manifest(str(out)).to_pylist()}
    assert 0 < len(first) < PHOTOS

    env, marker = _env()
    proc = _start(["--input", str(src), "--output", str(out)], env, log)
    assert _finish(proc, marker, log) == EXIT_OK
    latest = _check_complete(str(out))
    second = {r["id"] for r in latest if r["id"] not in first}
    assert len(first) + len(second) == PHOTOS  # the second run redid nothing the first committed
    _no_leftovers(out)


def _s3_job(seaweed, bucket: str, extra: list[str]) -> tuple[list[str], dict[str, str], str, S3Options]:
    server = seaweed.server
    fs = server.filesystem()
    for name, data in _photos().items():
        fs.pipe(f"{bucket}/photos/{name}", data)
    out = f"s3://{bucket}/results"
    args = [
        "--input",
        f"s3://{bucket}/photos",
        "--output",
        out,
        "--s3-endpoint-url",
        server.endpoint_url,
        *extra,
    ]
    env, marker = _env({"AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret})
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    s3 = S3Options(endpoint_url=server.endpoint_url, key=server.key, secret=server.secret, retry_seconds=0)
    return args, env, marker, s3


def test_a_store_outage_mid_run_is_waited_out(restartable_s3_server, tmp_path):
    seaweed = restartable_s3_server
    bucket = seaweed.server.create_bucket()
    args, env, marker, s3 = _s3_job(seaweed, bucket, [])
    log = tmp_path / "job.log"
    proc = _start(args, env, log)
    try:
        _wait_for_first_commit(f"s3://{bucket}/results", s3)
        seaweed.stop()
        time.sleep(6)  # real seconds of outage; the retry policy's timing is tested on a fake clock
        seaweed.start()
    finally:
        code = _finish(proc, marker, log)
    assert code == EXIT_OK
    _check_complete(f"s3://{bucket}/results", s3)


def _outage_then_rerun(
    seaweed, args: list[str], env: dict[str, str], marker: str, log: Path, when: Callable[[], bool], what: str
) -> None:
    """Stop the store once ``when`` holds: the job exits 2 with one line; a re-run then completes."""
    proc = _start(args, env, log)
    try:
        _wait(when, 240, what)
        seaweed.stop()
        code = proc.wait(timeout=180)
    finally:
        _finish(proc, marker, log)
        if not seaweed.is_running:
            seaweed.start()
    assert code == EXIT_JOB_ERROR
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unreachable" in errors[0], log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()

    proc = _start(args, env, log)
    assert _finish(proc, marker, log) == EXIT_OK


# --- scenes beside photos -----------------------------------------------------------------------

#: Scenes of different sizes, bands, dtypes and CRSs: (width, height, bands, dtype, crs).
SCENES = {
    "scenes/utm16.tif": (300, 260, 4, "uint16", "EPSG:32633"),
    "scenes/wgs84.tif": (260, 200, 1, "uint8", "EPSG:4326"),
    "scenes/mercator.tif": (200, 330, 3, "float32", "EPSG:3857"),
}
SCENE_FLAGS = ["--tile-size", "64", "--tile-overlap", "16", "--chunk-size", "96"]
SCENE_CHUNKS = {name: -(-w // 96) * -(-h // 96) for name, (w, h, *_) in SCENES.items()}


def _write_scenes(src: Path) -> None:
    from tests.support.geotiff_scenes import make_geotiff

    for i, (name, (width, height, bands, dtype, crs)) in enumerate(SCENES.items()):
        pixel = (0.0001, 0.0001) if crs == "EPSG:4326" else (10.0, 10.0)
        origin = (12.0, 48.0) if crs == "EPSG:4326" else (500000.0, 5200000.0)
        make_geotiff(
            src / name, width, height, bands, dtype, crs=crs, seed=i, pixel_size=pixel, origin=origin
        )


def _rows(out: str, s3: S3Options | None = None) -> list[dict]:
    try:
        return read_manifest(out, s3).to_pylist()
    except FileNotFoundError:
        return []


def _summaries(out: Path) -> list[dict]:
    import json

    files = sorted(out.glob("runs/*/summary.json"))
    return [json.loads(f.read_text()) for f in files]


def _scene_masks(out: Path) -> list[Path]:
    return list((out / "masks" / "scenes").glob("*.tif")) if (out / "masks" / "scenes").is_dir() else []


def _staged(out: Path) -> list[Path]:
    return list((out / "staging").rglob("*.tif")) if (out / "staging").is_dir() else []


def test_scene_work_survives_driver_kills_mid_scene_and_at_the_first_scene_mask(tmp_path):
    """Photos and scenes in one run, the driver SIGKILLed twice mid-scene: the re-run completes the
    union of photos and scenes, redoes nothing committed and reuses every staged chunk."""
    src, out, log = _local_input(tmp_path), tmp_path / "out", tmp_path / "job.log"
    _write_scenes(src)
    args = ["--input", str(src), "--output", str(out), *SCENE_FLAGS]
    scene_ids = {item_id(str(src / name)) for name in SCENES}

    # 1. Killed mid-scene: chunks staged, no scene committed yet.
    env, marker = _env()
    proc = _start(args, env, log)
    try:
        _wait(lambda: len(_staged(out)) >= 2, 180, "the first staged chunks")
        photos_at_first_chunks = sum(1 for r in _rows(str(out)) if r["id"] not in scene_ids)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        _finish(proc, marker, log)
    assert photos_at_first_chunks < PHOTOS, "scene chunks must not wait for every photo (one stream)"
    staged_after_first = len(_staged(out))
    assert staged_after_first >= 2
    assert not {r["id"] for r in _rows(str(out)) if r["id"] in scene_ids}, "killed before any scene commit"

    # 2. Killed as soon as the first scene mask exists.
    env, marker = _env()
    proc = _start(args, env, log)
    try:
        _wait(lambda: bool(_scene_masks(out)), 180, "the first scene mask")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        _finish(proc, marker, log)
    before = _rows(str(out))
    staged_before_rerun = len(_staged(out))
    assert staged_before_rerun > 0, "the second kill must leave staged chunks to reuse"

    # 3. The re-run finishes the union and redoes nothing committed.
    env, marker = _env()
    proc = _start(args, env, log)
    assert _finish(proc, marker, log) == EXIT_OK
    latest = latest_rows(read_manifest(str(out))).to_pylist()
    assert {r["status"] for r in latest} == {"ok"} and len(latest) == PHOTOS + len(SCENES)
    assert sorted(r["relative_path"] for r in latest if r["id"] not in scene_ids) == sorted(_photos())
    rows = _rows(str(out))
    for scene in scene_ids:
        assert [r["status"] for r in rows if r["id"] == scene] == ["ok"], "every scene ok exactly once"
    committed_before = {r["id"]: r["run_id"] for r in before}
    redone = [r for r in rows if r["id"] in committed_before and r["run_id"] != committed_before[r["id"]]]
    assert not redone, "nothing committed is redone"
    [summary] = _summaries(out)  # killed runs write none
    assert summary["scene_chunks_reused"] == staged_before_rerun, "every staged chunk is reused"
    remaining = sum(SCENE_CHUNKS[n] for n in SCENES if item_id(str(src / n)) not in committed_before)
    assert summary["scene_chunks_inferred"] + summary["scene_chunks_reused"] == remaining
    assert not _staged(out), "committed scenes leave no staging"
    _no_leftovers_but_scenes(out)


def _no_leftovers_but_scenes(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.name.endswith(".tmp")], "temporary files left"
    assert sorted(p.relative_to(out / "masks").as_posix() for p in _scene_masks(out)) == sorted(
        Path(name).with_suffix(".tif").as_posix() for name in SCENES
    )


def test_the_store_stopping_during_a_scene_assembly_is_exit_2_and_a_rerun_completes(
    restartable_s3_server, tmp_path
):
    """An outage longer than the retry window while photos are committed and a scene assembles:
    exit 2 with one line, and a re-run completes photos and scenes."""
    seaweed = restartable_s3_server
    bucket = seaweed.server.create_bucket()
    local = tmp_path / "scenes_src"
    _write_scenes(local)
    fs = seaweed.server.filesystem()
    for name in SCENES:
        fs.put_file(str(local / name), f"{bucket}/photos/{name}")
    args, env, marker, s3 = _s3_job(seaweed, bucket, ["--s3-retry-seconds", "8", *SCENE_FLAGS])
    first = min(SCENE_CHUNKS.values())

    def a_scene_fully_staged() -> bool:
        try:
            found = fs.find(f"{bucket}/results/staging")
        except FileNotFoundError:
            return False
        per_scene: dict[str, int] = {}
        for key in found:
            if key.endswith(".tif"):
                folder = key.rsplit("/", 1)[0]
                per_scene[folder] = per_scene.get(folder, 0) + 1
        fs.invalidate_cache()
        return any(count >= first for count in per_scene.values())

    what = "a scene's last chunk staged (its assembly starting)"
    _outage_then_rerun(seaweed, args, env, marker, tmp_path / "job.log", a_scene_fully_staged, what)
    latest = latest_rows(read_manifest(f"s3://{bucket}/results", s3)).to_pylist()
    assert len(latest) == PHOTOS + len(SCENES) and {r["status"] for r in latest} == {"ok"}
