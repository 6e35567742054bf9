"""Scenes far larger than a tile: chunked, tiled, blended, assembled into a georeferenced COG."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from birefnet_core.quantization import quantize_probabilities
from birefnet_core.tiling import TilingOptions, predict_tiled
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD
from connectors.manifest import read_manifest
from connectors.raster import read_window
from jobs.common.cli import build_config
from jobs.segment import run
from jobs.segment.config import SegmentConfig
from tests.support.geotiff_scenes import make_geotiff
from tests.support.scene_harness import plan_of, run_scene, settings, stand_in_inference

TILE, OVERLAP, CHUNK = 64, 24, 96
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def blur_model(batch: torch.Tensor) -> torch.Tensor:
    """Translation-equivariant stand-in: a 5x5 box blur of the grey image, in [0, 1]."""
    grey = (batch * STD + MEAN).mean(dim=1, keepdim=True)
    return F.avg_pool2d(F.pad(grey, (2, 2, 2, 2), mode="replicate"), 5, stride=1).clamp(0, 1)


def blur_levels(tiles: np.ndarray) -> np.ndarray:
    """InferenceStage's output for the blur model: quantised probabilities of N x h x w x 3 tiles."""
    x = (torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    return quantize_probabilities(blur_model(x)[:, 0]).numpy()


def _chunked(path, tmp_path, bands=None):
    plan = plan_of(path, settings(str(tmp_path / "staging"), CHUNK, OVERLAP, bands, TILE))
    scene = run_scene(plan, stand_in_inference(blur_levels), tmp_path / "out", TILE, OVERLAP)
    return plan, scene.row


def test_chunked_scene_equals_in_memory_tiling(tmp_path):
    path = make_geotiff(tmp_path / "scene.tif", 333, 250, 4, dtype="uint16", pixel_size=(10.0, 7.5))
    plan, manifest = _chunked(path, tmp_path, bands=[3, 2, 1])
    assert manifest["status"] == "ok", manifest["error"]
    assert manifest["chunk_count"] == len(plan.chunks) > 4
    with rasterio.open(manifest["mask_uri"]) as mask_file:
        chunked = mask_file.read(1).astype(np.float32) / 255
    image, _ = read_window(str(path), (0, 0, 250, 333), [3, 2, 1], plan.scaling)
    reference = predict_tiled(image, blur_model, TilingOptions(TILE, OVERLAP, batch_size=4)).probabilities
    assert np.abs(chunked - reference).max() <= 2 / 255
    assert 0.0 <= manifest["seam_disagreement"] < 0.01


def test_nodata_stays_nodata(tmp_path):
    path = make_geotiff(tmp_path / "holes.tif", 200, 150, 3, nodata=0, nodata_region=(10, 20, 60, 90))
    _, manifest = _chunked(path, tmp_path)
    with rasterio.open(manifest["mask_uri"]) as mask_file:
        mask = mask_file.read(1)
        assert mask_file.nodata == 0
    assert (mask[10:60, 20:90] == 0).all()
    assert (mask[70:, 100:] > 0).all()


@pytest.mark.parametrize(("bands", "dtype"), [(1, "uint8"), (4, "uint8"), (3, "uint16"), (1, "int16")])
def test_band_counts_and_bit_depths(tmp_path, bands, dtype):
    path = make_geotiff(tmp_path / f"b{bands}.tif", 130, 110, bands, dtype=dtype)
    plan, manifest = _chunked(path, tmp_path)
    assert manifest["status"] == "ok", manifest["error"]
    assert (plan.scaling is None) == (dtype == "uint8")
    with rasterio.open(manifest["mask_uri"]) as mask_file:
        assert (mask_file.width, mask_file.height) == (130, 110)


@pytest.mark.slow
def test_job_writes_a_cog_with_the_inputs_georeferencing(embedded_ray, tmp_path):
    src = tmp_path / "in"
    path = make_geotiff(src / "tiles" / "utm.tif", 300, 220, 4, dtype="uint16", nodata=0,
                        nodata_region=(0, 0, 30, 40), pixel_size=(10.0, 7.5))  # fmt: skip
    out = tmp_path / "out"
    config = build_config(
        SegmentConfig,
        {"input": str(src), "output": str(out), "variant": "lite", "weights": "random", "device": "cpu",
         "dtype": "float32", "tile_size": 64, "tile_overlap": 16, "chunk_size": 128, "bands": "3,2,1"}
    )  # fmt: skip
    summary = run(config)
    assert (summary.ok, summary.failed) == (1, 0), summary.errors
    with rasterio.open(path) as scene, rasterio.open(out / "masks" / "tiles" / "utm.tif") as mask:
        assert mask.crs == scene.crs and mask.transform == scene.transform
        assert (mask.width, mask.height, mask.count, mask.dtypes[0]) == (300, 220, 1, "uint8")
        assert mask.profile["tiled"] and mask.profile["compress"] == "deflate"
        data = mask.read(1)
        assert (data[:30, :40] == 0).all() and (data[40:, 50:] > 0).all()
    gdal = subprocess.run(
        ["gdalinfo", str(out / "masks" / "tiles" / "utm.tif")], capture_output=True, text=True
    )
    assert gdal.returncode == 0 and "LAYOUT=COG" in gdal.stdout and "32633" in gdal.stdout, gdal.stderr
    row = read_manifest(str(out)).to_pylist()[0]
    assert row["chunk_count"] == 6 and row["tile_count"] >= 6
    assert row["width"] == 300 and row["height"] == 220 and 0 < row["seam_disagreement"] < 1
    assert row["resolution"] == "64x64", "the working size the model ran at, WxH as the README says"
    assert not [p for p in (out / "staging").rglob("*") if p.is_file()], "staged chunks must be cleaned up"


def _mask(row) -> np.ndarray:
    with rasterio.open(row["mask_uri"]) as mask_file:
        return mask_file.read(1)


def _stage_some(plan, count):
    """What a run killed after ``count`` chunks leaves: those chunks staged, no commit."""
    from connectors.storage import S3Options
    from jobs.segment.rows import column_batch, rows_of
    from jobs.segment.scene_context import SceneContext
    from jobs.segment.scene_stages import ChunkBlendStage, ChunkTileStage, chunk_rows

    s3 = S3Options()
    tiler, blender = (
        ChunkTileStage(TILE, OVERLAP, s3),
        ChunkBlendStage(OVERLAP, None, SceneContext(0, 0.5, s3), s3),
    )
    infer = stand_in_inference(blur_levels)
    for row in chunk_rows(plan)[:count]:
        [status] = rows_of(blender(infer(tiler(column_batch([row], list(row))))))
        assert not status["error"], status["error"]


def test_a_replanned_scene_reuses_staged_chunks_and_commits_the_same_mask(tmp_path):
    path = make_geotiff(tmp_path / "scene.tif", 333, 250, 3, dtype="uint16")
    fresh = run_scene(
        plan_of(path, settings(str(tmp_path / "a"), CHUNK, OVERLAP)), stand_in_inference(blur_levels),
        tmp_path / "out_a", TILE, OVERLAP,
    ).row  # fmt: skip

    staging = settings(str(tmp_path / "b"), CHUNK, OVERLAP)
    first = plan_of(path, staging)
    _stage_some(first, 5)
    again = plan_of(path, staging)
    assert len(again.staged) == 5 and len(again.todo) == len(first.chunks) - 5
    assert len(plan_of(path, staging, version="edited").todo) == len(first.chunks), (
        "a new version reuses nothing"
    )
    other = settings(str(tmp_path / "b"), CHUNK, OVERLAP + 8)
    assert plan_of(path, other).staged == frozenset(), "other settings look elsewhere"

    inferred: list[int] = []

    def counting(tiles):
        inferred.append(len(tiles))
        return blur_levels(tiles)

    resumed = run_scene(again, stand_in_inference(counting), tmp_path / "out_b", TILE, OVERLAP).row
    assert len(inferred) == len(again.todo)
    assert resumed["status"] == "ok" and resumed["tile_count"] == fresh["tile_count"]
    assert resumed["seam_disagreement"] == pytest.approx(fresh["seam_disagreement"])
    assert resumed["mean_confidence"] == pytest.approx(fresh["mean_confidence"])
    np.testing.assert_array_equal(_mask(resumed), _mask(fresh))
    assert not (Path(again.staging)).exists(), "a committed scene's staging is removed"


def test_a_scene_whose_chunks_were_all_staged_commits_without_segmenting(tmp_path):
    path = make_geotiff(tmp_path / "scene.tif", 200, 150, 3)
    staging = settings(str(tmp_path / "staging"), CHUNK, OVERLAP)
    plan = plan_of(path, staging)
    _stage_some(plan, len(plan.chunks))
    replanned = plan_of(path, staging)
    assert replanned.todo == ()

    def never(tiles):
        raise AssertionError("nothing is left to segment")

    row = run_scene(replanned, stand_in_inference(never), tmp_path / "out", TILE, OVERLAP).row
    assert row["status"] == "ok" and row["chunk_count"] == len(plan.chunks)
    assert row["weights_sha256"] == "stand-in", "the model identity comes from the staged chunks"


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_whole_scene_context_equals_predict_tiled_with_context(tmp_path, weight):
    from connectors.storage import S3Options
    from jobs.segment.scene_context import SceneContext, context_view, stage_coarse_map

    path = make_geotiff(tmp_path / "scene.tif", 333, 250, 4, dtype="uint16")
    plan = plan_of(path, settings(str(tmp_path / "staging"), CHUNK, OVERLAP, [3, 2, 1]))
    s3, size = S3Options(), 96
    view = context_view(plan, size, s3)
    stage_coarse_map(
        plan.staging,
        blur_model((torch.from_numpy(view)[None].permute(0, 3, 1, 2) / 255 - MEAN) / STD)[0, 0].numpy(),
        s3,
    )
    row = run_scene(
        plan, stand_in_inference(blur_levels), tmp_path / "out", TILE, OVERLAP, SceneContext(size, weight, s3)
    ).row
    assert row["status"] == "ok", row["error"]
    image, _ = read_window(str(path), (0, 0, 250, 333), [3, 2, 1], plan.scaling)
    options = TilingOptions(TILE, OVERLAP, batch_size=4, context_size=size, context_weight=weight)
    reference = quantize_probabilities(predict_tiled(image, blur_model, options).probabilities)
    without = quantize_probabilities(
        predict_tiled(image, blur_model, TilingOptions(TILE, OVERLAP, 4)).probabilities
    )
    job = _mask(row).astype(int)
    assert np.abs(job - reference.astype(int)).max() <= 1
    assert np.abs(job - without.astype(int)).max() > 3, "the context must change the mask"


@pytest.mark.slow
def test_job_with_scene_context_equals_predict_tiled_with_the_demo_model(embedded_ray, tmp_path):
    from birefnet_core import load_model

    src = tmp_path / "in"
    one_chunk = make_geotiff(src / "one_chunk.tif", 200, 170, 3, dtype="uint16", seed=3)
    make_geotiff(src / "four_chunks.tif", 300, 260, 3, seed=4, crs="EPSG:4326", pixel_size=(1e-4, 1e-4),
                 origin=(12.0, 48.0))  # fmt: skip
    out = tmp_path / "out"
    config = build_config(
        SegmentConfig,
        {"input": str(src), "output": str(out), "variant": "demo", "device": "cpu", "dtype": "float32",
         "tile_size": 96, "tile_overlap": 32, "chunk_size": 256, "scene_context": 128, "batch_size": 4}
    )  # fmt: skip
    summary = run(config)
    assert (summary.ok, summary.failed) == (2, 0), summary.errors
    assert (summary.scene_chunks_inferred, summary.scene_chunks_reused) == (1 + 4, 0)

    # One chunk: the job's tiles sit where predict_tiled puts them, so any model must agree.
    plan = plan_of(one_chunk, settings(str(tmp_path / "unused"), 256, 32))
    image, _ = read_window(str(one_chunk), (0, 0, 170, 200), None, plan.scaling)
    model = load_model("demo").eval()
    options = TilingOptions(96, 32, batch_size=4, context_size=128, context_weight=0.5)
    with torch.inference_mode():
        reference = quantize_probabilities(
            predict_tiled(image, lambda x: model(x).sigmoid(), options).probabilities
        )
        plain = quantize_probabilities(
            predict_tiled(image, lambda x: model(x).sigmoid(), TilingOptions(96, 32, 4)).probabilities
        )
    with rasterio.open(out / "masks" / "one_chunk.tif") as mask:
        job = mask.read(1).astype(int)
    assert np.abs(job - reference.astype(int)).max() <= 1
    assert np.abs(job - plain.astype(int)).max() > 1, "without the context the masks differ"
