"""Which inputs the job reads as scenes (window by window) and which it decodes as images."""

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest

from connectors.listing import Source, sources_table
from connectors.storage import S3Options
from connectors.synthetic import encode_image, object_scene
from jobs.segment.listing import _split
from jobs.segment.scene_planning import plan_candidate
from tests.support.geotiff_scenes import make_geotiff
from tests.support.scene_harness import settings


def _source(path: Path) -> Source:
    return Source(uri=str(path), relative_path=path.name, size=path.stat().st_size, version="v", kind="file")


def _routes(paths: list[Path], min_pixels: int, staging: Path) -> dict[str, str]:
    scene_settings = dataclasses.replace(settings(str(staging), 96, 16), min_pixels=min_pixels)
    out = {}
    for path in paths:
        result = plan_candidate(_source(path), scene_settings, S3Options())
        out[path.name] = "image" if result is None else "error" if isinstance(result, str) else "scene"
    return out


def test_png_jpeg_vrt_and_tiff_routes(tmp_path):
    big_png = tmp_path / "ortho.png"
    big_png.write_bytes(encode_image(object_scene(300, 200, seed=1), "PNG"))
    small_jpg = tmp_path / "photo.jpg"
    small_jpg.write_bytes(encode_image(object_scene(100, 80, seed=2)))
    geo = make_geotiff(tmp_path / "geo.tif", 60, 50, 3)
    plain = make_geotiff(tmp_path / "plain.tif", 60, 50, 3, crs=None)
    vrt = tmp_path / "small.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="60" rasterYSize="50"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">plain.tif</SourceFilename><SourceBand>1</SourceBand>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    broken_vrt = tmp_path / "broken.vrt"
    broken_vrt.write_text("<VRTDataset")
    routes = _routes(
        [big_png, small_jpg, geo, plain, vrt, broken_vrt], min_pixels=50_000, staging=tmp_path / "s"
    )
    assert routes == {
        "ortho.png": "scene",  # 60,000 px > 50,000
        "photo.jpg": "image",
        "geo.tif": "scene",  # georeferenced: always
        "plain.tif": "image",
        "small.vrt": "scene",  # only GDAL reads it
        "broken.vrt": "error",
    }
    assert _routes([big_png], min_pixels=100_000, staging=tmp_path / "s") == {"ortho.png": "image"}


@pytest.mark.parametrize(
    ("path", "size", "candidate"),
    [
        ("a.tif", 10, True),
        ("a.TIFF", 10, True),
        ("a.vrt", 10, True),
        ("a.jp2", 10, True),
        ("a.png", 999, False),
        ("a.png", 1000, True),
        ("b/a.JPG", 5000, True),
        ("a.jpeg", 10, False),
        ("a.webp", 10**9, False),
    ],
)
def test_listing_sends_rasters_and_large_png_jpeg_to_planning(path, size, candidate):
    table = sources_table(
        [Source(uri=f"/in/{path}", relative_path=path, size=size, version="v", kind="file")]
    )
    images, candidates = _split(table, scene_min_bytes=1000)
    assert (candidates.num_rows, images.num_rows) == ((1, 0) if candidate else (0, 1))
    assert isinstance(images, pa.Table)
