"""Report thumbnails: sizes, orientation, overlay and cut-out pixels, big files, and reasons instead of errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from connectors.raster import RasterInfo, write_geotiff_mask
from connectors.synthetic import encode_image, object_scene
from connectors.thumbnails import (
    Preview,
    cutout_png,
    overlay_png,
    preview,
    thumbnail_png,
    triptych,
)

RED = (255, 0, 80)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(png: bytes | None) -> np.ndarray:
    assert png is not None
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _grey_image(width: int, height: int, value: int = 100) -> bytes:
    return _png(np.full((height, width, 3), value, np.uint8))


def _left_half_mask(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return _png(mask)


def test_thumbnail_keeps_the_aspect_ratio_within_max_side():
    thumb = thumbnail_png(encode_image(object_scene(800, 600, 1)), max_side=200)
    assert thumb.note is None
    assert Image.open(io.BytesIO(thumb.png)).size == (200, 150)


def test_small_images_are_not_enlarged():
    thumb = thumbnail_png(encode_image(object_scene(60, 40, 1), "PNG"), max_side=256)
    assert Image.open(io.BytesIO(thumb.png)).size == (60, 40)


def test_exif_orientation_is_applied_like_the_job_does():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the job's masks are in the displayed orientation
    buffer = io.BytesIO()
    object_scene(160, 80, 2).save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = preview(buffer.getvalue(), 64)
    assert decoded.full_size == (80, 160)
    assert decoded.image.size == (32, 64)


def test_overlay_tints_only_the_masked_half():
    pixels = _decoded(overlay_png(_grey_image(200, 100), _left_half_mask(200, 100), max_side=100).png)
    assert pixels.shape == (50, 100, 3)
    left, right = pixels[10:40, 5:40].reshape(-1, 3), pixels[10:40, 60:95].reshape(-1, 3)
    assert (right == 100).all()
    expected = np.round(100 + 0.45 * (np.array(RED) - 100))
    assert np.abs(left.mean(axis=0) - expected).max() <= 2


def test_cutout_shows_the_checkerboard_where_the_mask_is_empty():
    pixels = _decoded(cutout_png(_grey_image(200, 100, 30), _left_half_mask(200, 100), max_side=200).png)
    assert (pixels[:, :90] == 30).all()
    background = set(map(tuple, pixels[:, 110:].reshape(-1, 3)))
    assert background == {(204, 204, 204), (255, 255, 255)}


def test_mask_of_another_size_is_resized_and_a_mismatch_noted():
    image = _grey_image(200, 100)
    half_resolution = overlay_png(image, _left_half_mask(100, 50), max_side=100)
    assert half_resolution.png is not None
    assert "mask is 100x50 px but the image is 200x100 px" in half_resolution.note
    unpaired = cutout_png(image, _left_half_mask(60, 60), max_side=100)
    assert _decoded(unpaired.png).shape == (50, 100, 3)
    assert "60x60" in unpaired.note


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "photo.jpg: file is empty"),
        (b"<html>not an image</html>", "photo.jpg: not a recognised image format"),
        (encode_image(object_scene(300, 200, 3))[:600], "photo.jpg: cannot decode"),
    ],
)
def test_bad_bytes_give_a_reason_not_an_exception(data, reason):
    thumb = thumbnail_png(data, name="photo.jpg")
    assert thumb.png is None
    assert thumb.note.startswith(reason)
    overlay = overlay_png(_grey_image(40, 40), data, names=("image.png", "photo.jpg"))
    assert overlay.png is None and overlay.note.startswith(reason)


def test_huge_images_are_refused_before_decoding():
    big = _png(np.zeros((1200, 1000), np.uint8))
    thumb = thumbnail_png(big, name="big.png", max_pixels=1_000_000)
    assert thumb.png is None
    assert "big.png: 1000x1200 px is too large to preview" in thumb.note


def test_large_jpegs_decode_at_reduced_scale():
    data = encode_image(object_scene(2400, 1600, 4), quality=70)
    thumb = thumbnail_png(data, max_side=256, max_pixels=1_000_000)  # 3.8 MP in full, 0.24 MP drafted
    assert Image.open(io.BytesIO(thumb.png)).size == (256, 171)


def test_cog_masks_are_read_from_an_overview(tmp_path):
    width, height = 2048, 1536
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    info = RasterInfo(
        width=width,
        height=height,
        count=1,
        dtypes=("uint8",),
        crs="EPSG:32633",
        transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0),
        nodata=0,
        is_georeferenced=True,
        block_shapes=((512, 512),),
    )
    path = tmp_path / "scene.tif"
    write_geotiff_mask(str(path), info, mask)
    with path.open("rb") as handle:
        decoded = preview(handle, 256, name="scene.tif", mask=True, max_pixels=200_000)
    assert decoded.reason is None
    assert decoded.full_size == (width, height)
    assert decoded.image.mode == "L" and decoded.image.size == (256, 192)
    grey = np.asarray(decoded.image)
    assert grey[:, :120].min() > 200 and grey[:, 136:].max() < 50


def test_sixteen_bit_and_transparent_images_become_viewable_rgb():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    sixteen = preview(_png(ramp), 64)
    assert sixteen.image.mode == "RGB"
    assert np.asarray(sixteen.image)[0, -1, 0] >= 250
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black
    flat = preview(_png(rgba), 64)
    assert (np.asarray(flat.image) == 255).all()


def test_triptych_without_the_image_still_shows_the_mask():
    mask = preview(_left_half_mask(80, 40), 64, mask=True)
    image, overlay, cutout = triptych(Preview.unavailable("missing image: /data/a.jpg"), mask)
    assert image.png is None and image.note == "missing image: /data/a.jpg"
    assert overlay.png is not None and "mask alone" in overlay.note
    assert cutout.png is None and cutout.note == "missing image: /data/a.jpg"
    image, overlay, cutout = triptych(
        preview(_grey_image(80, 40), 64), Preview.unavailable("missing mask: m.png")
    )
    assert image.png is not None
    assert overlay.note == cutout.note == "missing mask: m.png"
