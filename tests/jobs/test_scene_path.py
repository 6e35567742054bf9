"""Scenes far larger than a tile: chunked, tiled, blended, assembled into a georeferenced COG."""

import subprocess

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from birefnet_core.quantization import quantize_probabilities
from birefnet_core.tiling import TilingOptions, predict_tiled
from birefnet_core.variants import IMAGENET_MEAN, IMAGENET_STD
from connectors.listing import Source
from connectors.manifest import RunRef, read_manifest
from connectors.raster import read_info, read_window
from connectors.storage import S3Options
from jobs.batches import column_batch, rows_of
from jobs.cli import build_config
from jobs.config import SegmentConfig
from jobs.scene_stages import ChunkBlendStage, ChunkTileStage, assemble_scene, chunk_rows, plan_scene
from jobs.segment import run
from tests.support.geotiff_scenes import make_geotiff

TILE, OVERLAP, CHUNK = 64, 24, 96
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def blur_model(batch: torch.Tensor) -> torch.Tensor:
    """Translation-equivariant stand-in: a 5x5 box blur of the grey image, in [0, 1]."""
    grey = (batch * STD + MEAN).mean(dim=1, keepdim=True)
    return F.avg_pool2d(F.pad(grey, (2, 2, 2, 2), mode="replicate"), 5, stride=1).clamp(0, 1)


class StandInInference:
    """Takes InferenceStage's place: quantised probabilities for every chunk's tiles."""

    def __call__(self, batch):
        rows = list(rows_of(batch))
        for row in rows:
            pixels = torch.from_numpy(row.pop("pixels"))
            x = (pixels.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
            row.update(
                probs=quantize_probabilities(blur_model(x)[:, 0]).numpy(),
                infer_seconds=0.0, weights_sha256="stand-in", weights_source="stand-in", dtype="float32", backend="torch",
            )  # fmt: skip
        return column_batch(rows, list(rows[0]))


def _chunked(path, tmp_path, bands=None):
    s3 = S3Options()
    source = Source(uri=str(path), relative_path=path.name, size=1, version="v", kind="file")
    plan = plan_scene(source, read_info(str(path)), bands, (2.0, 98.0), CHUNK, OVERLAP, s3)
    tiler, infer = ChunkTileStage(TILE, OVERLAP, s3), StandInInference()
    blender = ChunkBlendStage(str(tmp_path / "staging"), OVERLAP, None, s3)
    results = []
    for row in chunk_rows(plan):
        batch = column_batch([row], list(row))
        results += list(rows_of(blender(infer(tiler(batch)))))
    manifest = assemble_scene(
        plan, results, str(tmp_path / "out"), str(tmp_path / "staging"), s3, RunRef("t", "lite", "tiles")
    )
    return plan, manifest.as_dict()


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
    assert not list((out / "runs").rglob("*.png")), "staged chunks must be cleaned up"
