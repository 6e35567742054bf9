"""The job on what production hands it: mixed inputs in one run, collisions, odd names, bad set-ups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.compute as pc
import pytest
import rasterio

from connectors.manifest import latest_rows, read_manifest
from jobs.common.errors import EXIT_JOB_ERROR, EXIT_OK
from jobs.segment import main
from tests.support.production_corpus import (
    BAD,
    DRONE_WORLD,
    FLAGS,
    GOOD_IMAGES,
    GOOD_SCENES,
    write_production_corpus,
)

REPO = Path(__file__).resolve().parents[2]

# Whole runs of the job on production-like inputs, most with a Ray of their own: 15-70 s each.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_run(embedded_ray, tmp_path_factory):
    src = write_production_corpus(tmp_path_factory.mktemp("corpus"))
    out = tmp_path_factory.mktemp("out")
    code = main(["--input", str(src), "--output", str(out), *FLAGS, "--max-failure-fraction", "0.5"])
    return src, out, code


def _latest(out: Path) -> dict[str, dict]:
    return {row["relative_path"]: row for row in latest_rows(read_manifest(str(out))).to_pylist()}


def test_every_kind_of_input_in_one_run_gets_its_own_row(mixed_run):
    src, out, code = mixed_run
    assert code == EXIT_OK
    rows = _latest(out)
    assert set(rows) == {*GOOD_IMAGES, *GOOD_SCENES, *BAD}
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {*GOOD_IMAGES, *GOOD_SCENES}
    for name in BAD:
        assert str(src / name) in rows[name]["error"], rows[name]["error"]
    assert "truncated.tif" in rows["scenes/truncated.tif"]["error"]


def test_scenes_of_every_layout_become_georeferenced_masks(mixed_run):
    src, out, _ = mixed_run
    rows = _latest(out)
    for name in GOOD_SCENES:
        row = rows[name]
        assert row["mask_uri"] == str(
            out / Path(name).with_suffix(".tif").as_posix().replace("scenes", "masks/scenes")
        )
        assert Path(row["mask_uri"]).is_file() and row["chunk_count"] >= 2 and row["tile_count"] >= 2
    crs = {}
    for name in GOOD_SCENES:
        with rasterio.open(src / name) as scene, rasterio.open(rows[name]["mask_uri"]) as mask:
            assert (mask.width, mask.height, mask.crs, mask.transform) == (
                scene.width,
                scene.height,
                scene.crs,
                scene.transform,
            )
            crs[name] = mask.crs.to_epsg() if mask.crs else None
    assert crs["scenes/rgb8.tif"] == crs["scenes/mosaic.vrt"] == 4326 and crs["scenes/two_band.tif"] == 3857
    assert crs["scenes/rgbn16_nodata.tif"] == 32633 and crs["scenes/ortho.png"] is None
    with rasterio.open(rows["scenes/drone.jpg"]["mask_uri"]) as mask:
        world = mask.transform * (0.5, 0.5)  # a world file names the centre of the first pixel
        assert (mask.transform.a, mask.transform.e, *world) == (0.5, -0.5, DRONE_WORLD[4], DRONE_WORLD[5])


def test_colliding_names_both_survive(mixed_run):
    _, out, _ = mixed_run
    rows = _latest(out)
    jpg, png = rows["photos/a.jpg"]["mask_uri"], rows["photos/a.png"]["mask_uri"]
    assert jpg == str(out / "masks/photos/a.jpg.png") and png == str(out / "masks/photos/a.png.png")
    assert Path(jpg).is_file() and Path(png).is_file()
    assert rows["photos/x#y.jpg"]["mask_uri"] == str(out / "masks/photos/x#y.png")


def test_nothing_half_written_and_every_uri_absolute(mixed_run):
    _, out, _ = mixed_run
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".") or p.suffix == ".tmp"]
    staged = {p.parent.name.rsplit("-", 1)[0] for p in (out / "staging").rglob("*.tif")}
    assert staged == {_latest(out)["scenes/truncated.tif"]["id"]}, (
        "only the failed scene keeps its good chunks"
    )
    for row in _latest(out).values():
        assert row["source_uri"].startswith("/") and (
            row["mask_uri"] is None or row["mask_uri"].startswith("/")
        )


def test_a_run_ends_with_its_summary(mixed_run):
    _, out, _ = mixed_run
    [summary_file] = out.glob("runs/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["exit_code"] == EXIT_OK and summary["job_error"] is None
    assert (summary["ok"], summary["failed"]) == (len(GOOD_IMAGES) + len(GOOD_SCENES), len(BAD))
    assert summary["listed"] == len(GOOD_IMAGES) + len(GOOD_SCENES) + len(BAD)
    assert len(summary["errors"]) == len(BAD)
    assert summary["scene_chunks_reused"] == 0 and summary["scene_chunks_inferred"] >= 2 * len(GOOD_SCENES)


def test_a_rerun_redoes_only_the_failures(mixed_run, tmp_path, capsys):
    src, first_out, _ = mixed_run
    # A copy: rerunning in place would add a run to the output the other tests of `mixed_run` read.
    out = shutil.copytree(first_out, tmp_path / "out")
    assert main(["--input", str(src), "--output", str(out), *FLAGS, "--max-failure-fraction", "1"]) == EXIT_OK
    assert (
        f"0 ok, {len(BAD)} failed, {len(GOOD_IMAGES) + len(GOOD_SCENES)} skipped" in capsys.readouterr().out
    )


def test_a_lone_8bit_geotiff(embedded_ray, tmp_path):
    from tests.support.geotiff_scenes import make_geotiff

    make_geotiff(tmp_path / "in" / "aerial.tif", 120, 100, 3, "uint8")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *FLAGS]) == EXIT_OK
    [row] = read_manifest(str(tmp_path / "out")).to_pylist()
    assert row["status"] == "ok" and row["mask_uri"].endswith("masks/aerial.tif")


def test_a_relative_output_is_recorded_absolute(embedded_ray, tmp_path, monkeypatch):
    write_production_corpus(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    assert (
        main(["--input", "in/photos", "--output", "rel/out", *FLAGS, "--max-failure-fraction", "1"])
        == EXIT_OK
    )
    [config] = (tmp_path / "rel/out/runs").glob("*/config.json")
    recorded = json.loads(config.read_text())
    assert (recorded["input"], recorded["output"]) == (str(tmp_path / "in/photos"), str(tmp_path / "rel/out"))
    table = read_manifest(str(tmp_path / "rel/out"))
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert all(uri.startswith(str(tmp_path / "rel/out/masks/")) for uri in ok["mask_uri"].to_pylist())


def test_an_unwritable_output_is_one_line_and_exit_2(embedded_ray, tmp_path, capsys):
    write_production_corpus(tmp_path / "in")
    (tmp_path / "out").write_text("a file where the output folder should be")
    assert (
        main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *FLAGS]) == EXIT_JOB_ERROR
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


def _job(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """The job in a process of its own, with its own embedded Ray (as a user starts it)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-m", "jobs.segment", *args],
        cwd=REPO,
        env={**base, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_one_cpu_is_refused_in_one_line_instead_of_hanging(tmp_path):
    write_production_corpus(tmp_path / "in")
    done = _job(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *FLAGS, "--num-cpus", "1",
                 "--object-store-memory", str(100 * 1024**2)], timeout=120)  # fmt: skip
    assert done.returncode == EXIT_JOB_ERROR, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 CPUs" in errors[0] and "--num-cpus" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_embedded_ray_never_attaches_to_a_cluster_recorded_on_the_machine(tmp_path):
    from tests.support.ray_cluster import local_ray_cluster

    write_production_corpus(tmp_path / "in")
    with local_ray_cluster(tmp_path / "cluster") as cluster:
        # What `ray start --head` leaves for a bare ray.init() to find: <RAY_TMPDIR>/ray/ray_current_cluster.
        recorded = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # Ray's socket paths must stay short
        (recorded / "ray").mkdir(parents=True)
        (recorded / "ray" / "ray_current_cluster").write_text(cluster.gcs_address)
        env = {**cluster.env, "RAY_TMPDIR": str(recorded)}
        env.pop("RAY_API_SERVER_ADDRESS", None)
        done = _job(["--input", str(tmp_path / "in/photos"), "--output", str(tmp_path / "out"), *FLAGS,
                     "--object-store-memory", str(100 * 1024**2), "--max-failure-fraction", "1"],
                    env=env)  # fmt: skip
    shutil.rmtree(recorded, ignore_errors=True)
    assert done.returncode == EXIT_OK, done.stderr[-4000:]
    assert "Connecting to existing Ray cluster" not in done.stderr
