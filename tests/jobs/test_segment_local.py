import io
import os
from pathlib import Path

import pyarrow.compute as pc
import pytest
from PIL import Image

from connectors.listing import list_sources, sources_table
from connectors.manifest import DoneIndex, read_manifest
from jobs.common.cli import build_config
from jobs.common.ray_startup import STAGE_OPTIONS
from jobs.segment import main, run
from jobs.segment.config import SegmentConfig
from jobs.segment.pipelines import Runtime, pipeline_dataset
from tests.support.geotiff_scenes import make_geotiff
from tests.support.job_corpus import BAD, BOMB_LIMIT, GOOD, SMOKE_FLAGS, expected_size, write_corpus
from tests.support.scene_harness import plan_of, settings


def _listed(config):
    import ray

    return ray.data.from_arrow(sources_table(list_sources(config.input)))


def _config(src: Path, out: Path, **extra):
    values = {
        "input": str(src),
        "output": str(out),
        "variant": "lite",
        "weights": "random",
        "resolution": (64, 64),
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 2,
        "outputs": ["mask", "cutout"],
        "max_image_pixels": BOMB_LIMIT,
        **extra,
    }
    return build_config(SegmentConfig, values)


@pytest.fixture(scope="module")
def first_run(embedded_ray, tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out")
    write_corpus(src)
    return src, out, run(_config(src, out))


def test_every_input_gets_one_manifest_row(first_run):
    _, out, summary = first_run
    table = read_manifest(str(out))
    assert table.num_rows == len(GOOD) + len(BAD)
    assert (summary.ok, summary.failed) == (len(GOOD), len(BAD))
    statuses = dict(zip(table["relative_path"].to_pylist(), table["status"].to_pylist(), strict=True))
    assert {k for k, v in statuses.items() if v == "ok"} == set(GOOD)


def test_masks_and_cutouts_have_each_inputs_exact_size(first_run):
    _, out, _ = first_run
    for name in GOOD:
        stem = Path(name).with_suffix(".png")
        mask = Image.open(out / "masks" / stem)
        cutout = Image.open(out / "cutouts" / stem)
        h, w = expected_size(name)
        assert (mask.mode, mask.size) == ("L", (w, h)), name
        assert (cutout.mode, cutout.size) == ("RGBA", (w, h)), name


def test_bad_inputs_get_clear_errors_and_no_outputs(first_run):
    src, out, _ = first_run
    table = read_manifest(str(out))
    errors = table.filter(pc.equal(table["status"], "error"))
    messages = dict(zip(errors["relative_path"].to_pylist(), errors["error"].to_pylist(), strict=True))
    assert set(messages) == set(BAD)
    for name, message in messages.items():
        assert str(src / name) in message, message
    assert "empty" in messages["empty.png"]
    assert "not a recognised image" in messages["text.jpg"]
    assert "pixel limit" in messages["bomb.png"]
    assert "truncated" in messages["truncated.jpg"].lower() or "decode" in messages["truncated.jpg"]
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for name in BAD:
        assert not any(Path(name).stem in w for w in written if not w.startswith(("manifest/", "runs/")))
    assert not [w for w in written if Path(w).name.startswith(".")], "temporary files left behind"


def test_manifest_records_model_and_quality(first_run):
    _, out, summary = first_run
    row = (
        read_manifest(str(out))
        .filter(pc.equal(read_manifest(str(out))["relative_path"], "a.jpg"))
        .to_pylist()[0]
    )
    assert row["weights_sha256"] == "random" and row["variant"] == "lite" and row["resolution"] == "64x64"
    assert row["dtype"] == "float32" and row["run_id"] == summary.run_id
    assert (row["width"], row["height"]) == (96, 64)
    assert 0 <= row["mean_confidence"] <= 1 and 0 <= row["uncertain_fraction"] <= 1
    assert row["mask_uri"].endswith("masks/a.png") and row["cutout_uri"].endswith("cutouts/a.png")
    assert row["decode_seconds"] > 0 and row["infer_seconds"] > 0 and row["encode_seconds"] > 0
    assert (out / "runs" / summary.run_id / "config.json").is_file()


@pytest.mark.slow
def test_rerun_skips_done_inputs_and_redoes_changed_ones(embedded_ray, tmp_path):
    """Its own run: the rerun adds manifest rows and touches an input that ``first_run``'s tests read."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_corpus(src)
    run(_config(src, out))
    changed = src / "a.jpg"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    orphan = out / "masks" / f".a.png.{'0' * 32}.tmp"  # what a writer killed before its rename leaves
    orphan.write_bytes(b"half a mask")
    (out / "masks" / ".keep").write_bytes(b"")
    summary = run(_config(src, out))
    assert not orphan.exists()
    assert (out / "masks" / ".keep").exists()
    assert summary.skipped == len(GOOD) - 1  # the unchanged ok inputs; a.jpg changed
    assert (summary.ok, summary.failed) == (1, len(BAD))
    latest = read_manifest(str(out)).filter(pc.equal(read_manifest(str(out))["run_id"], summary.run_id))
    assert sorted(latest["relative_path"].to_pylist()) == sorted(["a.jpg", *BAD])


@pytest.mark.slow
def test_exit_code_follows_the_failure_fraction(embedded_ray, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_corpus(src)
    args = ["--input", str(src), "--output", str(out), *SMOKE_FLAGS, "--no-skip-existing"]
    assert main([*args, "--max-failure-fraction", "0.1"]) == 1
    printed = capsys.readouterr().out
    assert "4 ok, 4 failed" in printed and "FAILED" in printed and str(out / "manifest") in printed
    assert main([*args, "--max-failure-fraction", "0.5"]) == 0


def test_job_level_problems_are_one_clear_line(embedded_ray, tmp_path, capsys):
    """With the test Ray: the job starts Ray before it finds the input missing, and Ray outlives the call."""
    assert (
        main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o"), "--weights", "random"])
        == 2
    )
    assert "missing" in capsys.readouterr().err
    assert (
        main(
            ["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--weights", str(tmp_path / "w.pth")]
        )
        == 2
    )
    assert "w.pth" in capsys.readouterr().err


def test_png_outputs_decode(first_run):
    _, out, _ = first_run
    table = read_manifest(str(out))
    [row] = table.filter(pc.equal(table["relative_path"], "a.jpg")).to_pylist()
    mask = Image.open(io.BytesIO(Path(row["mask_uri"]).read_bytes()))
    mask.load()
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (row["width"], row["height"]))
    low, high = mask.getextrema()
    assert low < high, "a constant mask: the PNG holds no prediction"


@pytest.mark.parametrize("with_scenes", [False, True])
def test_decoding_and_encoding_never_run_inside_the_inference_actors(
    embedded_ray, tmp_path, capsys, with_scenes
):
    write_corpus(tmp_path / "in")
    config = _config(tmp_path / "in", tmp_path / "out")
    plans = []
    if with_scenes:  # scene chunks join the images' stream before the one pool of actors
        scene = make_geotiff(tmp_path / "scene.tif", 300, 200, 3)
        plans = [plan_of(scene, settings(str(tmp_path / "staging"), 128, 16))]
    runtime = Runtime(config, "explain", "cpu", "float32", 0.0, DoneIndex.empty)
    pipeline_dataset(_listed(config), plans, runtime).explain()
    optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    actors = [line for line in optimized.splitlines() if "ActorPoolMapOperator" in line]
    assert len(actors) == 1 and actors[0].strip().endswith("[MapBatches(InferenceStage)]"), optimized
    assert ("Union" in optimized) == with_scenes, optimized


def test_every_stage_starts_its_workers_with_the_allocator_settings(embedded_ray, tmp_path):
    import ray

    from birefnet_core.runtime import ALLOCATOR_ENV

    write_corpus(tmp_path / "in")
    config = _config(tmp_path / "in", tmp_path / "out")
    ds = pipeline_dataset(_listed(config), [], Runtime(config, "env", "cpu", "float32", 0.0, DoneIndex.empty))
    stages, pending = [], [ds._logical_plan.dag]
    while pending:
        op = pending.pop()
        pending.extend(op.input_dependencies)
        if type(op).__name__ == "MapBatches":
            stages.append(op)
    assert len(stages) == 4  # read, prepare, inference, finish
    for op in stages:
        assert op.ray_remote_args["runtime_env"]["env_vars"] == ALLOCATOR_ENV, op

    # and Ray hands the variables to the worker processes
    probe = ray.remote(num_cpus=1, **STAGE_OPTIONS)(lambda: {k: os.environ.get(k) for k in ALLOCATOR_ENV})
    assert ray.get(probe.remote()) == ALLOCATOR_ENV


def _predict_flags(batch_size: int = 2) -> list[str]:
    """`birefnet predict` with the model, size and precision of `_config`."""
    return ["--variant", "lite", "--weights", "random", "--resolution", "64", "--device", "cpu",
            "--dtype", "float32", "--batch-size", str(batch_size), "--max-image-pixels", str(BOMB_LIMIT)]  # fmt: skip


def test_predict_writes_the_jobs_masks_and_cutouts_byte_for_byte(first_run, tmp_path):
    from jobs.predict import main as predict_main

    src, out, _ = first_run
    assert predict_main([str(src), "-o", str(tmp_path), *_predict_flags()]) == 1  # the corpus's bad inputs
    for name in GOOD:
        stem = Path(name).with_suffix(".png")
        for kind in ("masks", "cutouts"):
            assert (tmp_path / kind / stem).read_bytes() == (out / kind / stem).read_bytes(), (kind, name)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert len(written) == 2 * len(GOOD)


def test_a_parquet_lists_boxes_guide_the_jobs_masks_as_predict_does(embedded_ray, tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from connectors.synthetic import encode_image, object_scene
    from jobs.predict import main as predict_main

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name, seed in (("boxed.jpg", 1), ("plain.png", 2), ("outside.jpg", 3)):
        (src / name).write_bytes(
            encode_image(object_scene(120, 90, seed), "PNG" if name.endswith("png") else "JPEG")
        )
    uris = [str(src / n) for n in ("boxed.jpg", "plain.png", "outside.jpg")]
    pq.write_table(pa.table({"uri": uris, "box": ["10,5,60,50", None, "500,0,600,10"]}), src / "list.parquet")
    summary = run(_config(src / "list.parquet", out, outputs=["mask"]))
    assert (summary.ok, summary.failed) == (2, 1)
    rows = {Path(r["source_uri"]).name: r for r in read_manifest(str(out)).to_pylist()}
    assert rows["boxed.jpg"]["box"] == "10,5,60,50" and rows["plain.png"]["box"] is None
    assert "box 500,0,600,10 lies outside the 120x90 image" in rows["outside.jpg"]["error"]
    assert str(src / "outside.jpg") in rows["outside.jpg"]["error"]

    boxed = np.asarray(Image.open(rows["boxed.jpg"]["mask_uri"]))
    outside = np.ones(boxed.shape, bool)
    outside[5:50, 10:60] = False
    assert boxed.shape == (90, 120) and not boxed[outside].any() and boxed[5:50, 10:60].any()
    for name, extra in (("boxed.jpg", ["--box", "10,5,60,50"]), ("plain.png", [])):
        target = tmp_path / f"predicted-{Path(name).stem}"
        assert (
            predict_main([str(src / name), "-o", str(target), "--only-mask", *_predict_flags(), *extra]) == 0
        )
        predicted = target / "masks" / f"{Path(name).stem}.png"
        assert predicted.read_bytes() == Path(rows[name]["mask_uri"]).read_bytes(), name
