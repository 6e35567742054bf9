"""A corpus the way production hands it over: every input kind in one folder, broken ones beside good ones.

Scenes of every layout (8-bit, 16-bit with nodata, float, 1, 2 and 4 bands, plain TIFF) in
three CRSs, rasters that only reach the scene path by size or format (a huge PNG, a JPEG with a
world file, a VRT), photos (JPEG, 16-bit PNG, RGBA), names that collide once extensions go, odd
characters, and inputs that are broken in every common way, including a GeoTIFF whose header is
intact but whose data is cut (its later chunks fail to read, mid-scene).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from connectors.synthetic import encode_image, object_scene
from tests.support.geotiff_scenes import make_geotiff

#: Inputs that must come out `ok`, by relative path.
GOOD_IMAGES = (
    "photos/a.jpg",
    "photos/a.png",  # collides with a.jpg once the extension goes
    "photos/grey16.png",
    "photos/rgba.png",
    "photos/with space & ü.jpg",
    "photos/x#y.jpg",
    "plain.tif",  # a small TIFF without georeferencing: an ordinary image
)
GOOD_SCENES = (
    "scenes/rgb8.tif",  # EPSG:4326
    "scenes/rgbn16_nodata.tif",
    "scenes/grey_float.tif",
    "scenes/two_band.tif",  # EPSG:3857
    "scenes/mosaic.vrt",  # a VRT over rgb8.tif
    "scenes/ortho.png",  # above --scene-min-pixels and --scene-min-bytes: read by window
    "scenes/drone.jpg",  # the same, georeferenced by its world file drone.jgw
)
BAD = (
    "photos/truncated.jpg",
    "photos/empty.png",
    "scenes/truncated.tif",
)
#: Flags of a fast smoke run over this corpus.
FLAGS = ["--variant", "lite", "--weights", "random", "--resolution", "64", "--device", "cpu",
         "--tile-size", "64", "--tile-overlap", "16", "--chunk-size", "96", "--batch-size", "2",
         "--scene-min-pixels", "40000", "--scene-min-bytes", "10000"]  # fmt: skip
#: The world file of scenes/drone.jpg: 0.5 m pixels from (600000, 5100000).
DRONE_WORLD = (0.5, 0.0, 0.0, -0.5, 600000.25, 5099999.75)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _vrt_over(source: str, width: int, height: int) -> str:
    """A GDAL VRT of all three bands of ``source`` (a path relative to the VRT)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3)
    )
    georeferencing = "<SRS>EPSG:4326</SRS><GeoTransform>12.0, 0.0001, 0.0, 48.0, 0.0, -0.0001</GeoTransform>"
    return f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{georeferencing}{bands}</VRTDataset>'


def write_production_corpus(root: Path) -> Path:
    """Write the corpus under ``root`` and return ``root``."""
    photos = root / "photos"
    scenes = root / "scenes"
    photos.mkdir(parents=True)
    scenes.mkdir()
    for i, name in enumerate(("a.jpg", "with space & ü.jpg", "x#y.jpg")):
        (photos / name).write_bytes(encode_image(object_scene(72, 56, seed=i)))
    (photos / "a.png").write_bytes(encode_image(object_scene(40, 60, seed=7), "PNG"))
    ramp = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 20).astype(np.uint16)
    (photos / "grey16.png").write_bytes(_png(ramp))
    (photos / "rgba.png").write_bytes(encode_image(object_scene(30, 30, seed=8).convert("RGBA"), "PNG"))
    jpeg = encode_image(object_scene(64, 64, seed=9))
    (photos / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (photos / "empty.png").write_bytes(b"")

    make_geotiff(scenes / "rgb8.tif", 150, 110, 3, "uint8", seed=1, crs="EPSG:4326",
                 pixel_size=(0.0001, 0.0001), origin=(12.0, 48.0))  # fmt: skip
    make_geotiff(
        scenes / "rgbn16_nodata.tif", 130, 100, 4, "uint16", nodata=0, nodata_region=(0, 0, 30, 40), seed=2
    )
    make_geotiff(
        scenes / "grey_float.tif",
        100,
        90,
        1,
        "float32",
        nodata=-9999.0,
        nodata_region=(50, 50, 90, 100),
        seed=3,
    )
    make_geotiff(scenes / "two_band.tif", 120, 100, 2, "uint8", seed=4, crs="EPSG:3857")
    (scenes / "mosaic.vrt").write_text(_vrt_over("rgb8.tif", 150, 110))
    (scenes / "ortho.png").write_bytes(encode_image(object_scene(260, 200, seed=10), "PNG"))
    (scenes / "drone.jpg").write_bytes(encode_image(object_scene(300, 220, seed=11), quality=95))
    (scenes / "drone.jgw").write_text("\n".join(str(v) for v in DRONE_WORLD) + "\n")
    for name in ("ortho.png", "drone.jpg"):
        assert (scenes / name).stat().st_size >= 10000, f"{name} must pass --scene-min-bytes"
    make_geotiff(root / "plain.tif", 80, 60, 3, "uint8", crs=None, seed=5)
    whole = make_geotiff(scenes / "full.tif", 256, 256, 3, "uint8", seed=6, compress=None, tiled=False)
    data = whole.read_bytes()
    (scenes / "truncated.tif").write_bytes(data[: len(data) * 3 // 5])  # header and IFD intact, pixels cut
    whole.unlink()
    return root
