"""Windowed raster I/O: metadata, chunk plans, 8-bit reads with nodata, band scaling, COG masks, S3."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from connectors import raster
from connectors.raster import (
    BandScaling,
    Chunk,
    MaskRasterWriter,
    RasterReadError,
    assemble_mask,
    chunk_uri,
    compute_band_scaling,
    encode_nodata,
    plan_chunks,
    read_chunk,
    read_info,
    read_window,
    write_chunk,
    write_geotiff_mask,
)
from connectors.storage import S3Options, StorageAuthError
from tests.support.geotiff_scenes import make_geotiff


def _raw(path: Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Reference read (bands, h, w) straight through rasterio."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(path)
    with ds:
        if window is None:
            return ds.read()
        y0, x0, y1, x1 = window
        return ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))


def _mask_pattern(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((xx // 7 + yy // 5) * 37 % 256).astype(np.uint8)


def _s3(server) -> S3Options:
    return S3Options(endpoint_url=server.endpoint_url, key=server.key, secret=server.secret)


# --- read_info -------------------------------------------------------------------------------


def test_read_info_round_trips_georeferencing(tmp_path: Path) -> None:
    path = make_geotiff(
        tmp_path / "scene.tif",
        300,
        200,
        4,
        "uint16",
        nodata=0,
        pixel_size=(10.0, 20.0),
        origin=(500000, 5200000),
    )
    info = read_info(str(path))
    assert (info.width, info.height, info.count) == (300, 200, 4)
    assert info.dtypes == ("uint16",) * 4 and info.dtype == "uint16"
    assert CRS.from_wkt(info.crs).to_epsg() == 32633
    assert info.transform == (10.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0)
    assert info.nodata == 0
    assert info.is_georeferenced
    assert info.block_shapes == ((256, 256),) * 4
    assert info.driver == "GTiff"
    assert read_info(f"file://{path}") == info


def test_read_info_of_a_plain_tiff(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "plain.tif", 64, 48, 3, crs=None, tiled=False)
    info = read_info(str(path))
    assert info.crs is None and not info.is_georeferenced
    assert info.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert info.nodata is None


def test_read_errors_name_the_uri(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tif")
    with pytest.raises(FileNotFoundError, match=r"nope\.tif"):
        read_info(missing)
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all")
    with pytest.raises(RasterReadError, match=r"garbage\.tif"):
        read_info(str(garbage))
    with pytest.raises(FileNotFoundError, match=r"nope\.tif"):
        read_window(missing, (0, 0, 1, 1))


# --- plan_chunks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "chunk_size", "halo"),
    [(1000, 700, 256, 32), (512, 512, 512, 0), (5, 3, 10, 4), (1536, 2048, 1024, 100), (1, 1, 1, 1)],
)
def test_plan_chunks_tiles_the_raster_exactly(height: int, width: int, chunk_size: int, halo: int) -> None:
    chunks = plan_chunks(height, width, chunk_size, halo)
    assert len(chunks) == -(-height // chunk_size) * -(-width // chunk_size)
    hits = np.zeros((height, width), np.int32)
    for chunk in chunks:
        y0, x0, y1, x1 = chunk.core
        hits[y0:y1, x0:x1] += 1
        ry0, rx0, ry1, rx1 = chunk.read
        assert 0 <= ry0 <= y0 < y1 <= ry1 <= height and 0 <= rx0 <= x0 < x1 <= rx1 <= width
        assert (ry0, rx0) == (max(0, y0 - halo), max(0, x0 - halo))
        assert (ry1, rx1) == (min(height, y1 + halo), min(width, x1 + halo))
        cy0, cx0, cy1, cx1 = chunk.core_in_read
        assert (cy1 - cy0, cx1 - cx0) == (y1 - y0, x1 - x0)
        assert (cy0 + ry0, cx0 + rx0) == (y0, x0)
        assert (y0, x0) == (chunk.row * chunk_size, chunk.col * chunk_size)
    assert (hits == 1).all()


def test_plan_chunks_rejects_bad_arguments() -> None:
    for args in [(0, 10, 4, 0), (10, 10, 0, 0), (10, 10, 4, -1)]:
        with pytest.raises(ValueError):
            plan_chunks(*args)


# --- read_window -----------------------------------------------------------------------------


def test_read_window_returns_uint8_pixels_unchanged(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgb.tif", 300, 200, 3, "uint8")
    window = (37, 61, 150, 290)
    image, valid = read_window(str(path), window)
    assert image.shape == (113, 229, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.moveaxis(_raw(path, window), 0, -1))
    assert valid.all()


def test_read_window_scales_uint16_with_band_scaling(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "u16.tif", 200, 150, 3, "uint16")
    scale = BandScaling(low=[900, 1000, 1100], high=[3000, 3500, 4000])
    window = (10, 20, 140, 180)
    image, valid = read_window(str(path), window, scale=scale)
    raw = _raw(path, window).astype(np.float64)
    low, high = np.array(scale.low)[:, None, None], np.array(scale.high)[:, None, None]
    expected = np.rint(np.clip((raw - low) / (high - low), 0, 1) * 255)
    assert np.abs(image.astype(int) - np.moveaxis(expected, 0, -1)).max() <= 1
    assert image.min() == 0 and image.max() == 255  # the stretch clips at both ends
    assert valid.all()


def test_read_window_band_selection_reorders(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "rgb.tif", 80, 60, 3, "uint8")
    image, _ = read_window(str(path), (0, 0, 60, 80), bands=[3, 2, 1])
    np.testing.assert_array_equal(image, np.moveaxis(_raw(path)[[2, 1, 0]], 0, -1))
    single, _ = read_window(str(path), (0, 0, 60, 80), bands=[2])
    np.testing.assert_array_equal(single, np.repeat(_raw(path)[1][..., None], 3, axis=-1))
    with pytest.raises(ValueError, match="out of range"):
        read_window(str(path), (0, 0, 60, 80), bands=[4, 2, 1])
    with pytest.raises(ValueError, match="one or three"):
        read_window(str(path), (0, 0, 60, 80), bands=[1, 2])


@pytest.mark.parametrize(("count", "expected_bands"), [(1, [0, 0, 0]), (2, [0, 0, 0]), (4, [0, 1, 2])])
def test_read_window_default_bands(tmp_path: Path, count: int, expected_bands: list[int]) -> None:
    path = make_geotiff(tmp_path / "b.tif", 50, 40, count, "uint8")
    image, _ = read_window(str(path), (5, 5, 35, 45))
    np.testing.assert_array_equal(image, np.moveaxis(_raw(path, (5, 5, 35, 45))[expected_bands], 0, -1))


def test_read_window_marks_nodata_invalid(tmp_path: Path) -> None:
    region = (20, 30, 70, 90)
    path = make_geotiff(tmp_path / "nd.tif", 120, 100, 3, "uint16", nodata=0, nodata_region=region)
    scale = compute_band_scaling(str(path))
    image, valid = read_window(str(path), (10, 10, 100, 120), scale=scale)
    expected = np.ones((90, 110), bool)
    expected[10:60, 20:80] = False
    np.testing.assert_array_equal(valid, expected)
    assert (image[~valid] == 0).all() and image[valid].any()


def test_read_window_uses_alpha_band_and_nan(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.tif"
    data = np.full((4, 32, 48), 120, np.uint8)
    data[3] = 255
    data[3, 5:9, 10:20] = 0  # transparent
    profile = {"driver": "GTiff", "width": 48, "height": 32, "count": 4, "dtype": "uint8"}
    somewhere = rasterio.Affine(20.0, 0.0, 300000.0, 0.0, -20.0, 4000000.0)
    with rasterio.open(
        rgba, "w", photometric="RGB", alpha="YES", crs="EPSG:32633", transform=somewhere, **profile
    ) as dst:
        dst.write(data)
    image, valid = read_window(str(rgba), (0, 0, 32, 48))
    assert (~valid).sum() == 40 and not valid[5:9, 10:20].any()
    assert (image[~valid] == 0).all() and (image[valid] == 120).all()

    floats = tmp_path / "nan.tif"
    values = np.linspace(0, 1, 3 * 20 * 30, dtype=np.float32).reshape(3, 20, 30)
    values[1, 4, 7] = np.nan
    profile = {"driver": "GTiff", "width": 30, "height": 20, "count": 3, "dtype": "float32"}
    with rasterio.open(floats, "w", crs="EPSG:32633", transform=somewhere, **profile) as dst:
        dst.write(values)
    image, valid = read_window(str(floats), (0, 0, 20, 30), scale=BandScaling([0.0] * 3, [1.0] * 3))
    assert (~valid).sum() == 1 and not valid[4, 7]
    assert image[19, 29, 2] == 255 and image[0, 0, 0] == 0


def test_read_window_refuses_unscaled_wide_dtypes_and_bad_windows(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "u16.tif", 40, 30, 3, "uint16")
    with pytest.raises(ValueError, match="compute_band_scaling"):
        read_window(str(path), (0, 0, 30, 40))
    for window in [(0, 0, 31, 40), (5, 5, 5, 10), (-1, 0, 10, 10)]:
        with pytest.raises(ValueError, match="outside"):
            read_window(str(path), window, scale=BandScaling.identity())


def test_read_window_on_a_plain_tiff(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "plain.tif", 90, 70, 3, crs=None)
    image, valid = read_window(str(path), (10, 20, 60, 80))
    np.testing.assert_array_equal(image, np.moveaxis(_raw(path, (10, 20, 60, 80)), 0, -1))
    assert valid.all()


# --- compute_band_scaling --------------------------------------------------------------------


def test_band_scaling_matches_numpy_percentiles(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "s.tif", 300, 200, 3, "uint16", nodata=0, nodata_region=(0, 0, 50, 300))
    scale = compute_band_scaling(str(path), bands=[3, 2, 1], percentiles=(2.0, 98.0))
    raw = _raw(path)
    valid = raw[0] != 0
    expected = [np.percentile(raw[b][valid], [2.0, 98.0]) for b in (2, 1, 0)]
    np.testing.assert_allclose(scale.low, [e[0] for e in expected])
    np.testing.assert_allclose(scale.high, [e[1] for e in expected])


def test_band_scaling_from_a_decimated_read_is_close(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "big.tif", 2048, 1536, 1, "float32")
    scale = compute_band_scaling(str(path), max_samples=256 * 192)
    expected = np.percentile(_raw(path)[0], [2.0, 98.0])
    np.testing.assert_allclose([scale.low[0], scale.high[0]], expected, rtol=0.03)
    assert len(scale.low) == 3 and scale.low[0] == scale.low[2]


def test_band_scaling_of_uint8_is_identity(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "u8.tif", 40, 30, 3, "uint8")
    assert compute_band_scaling(str(path)) == BandScaling.identity()


def test_band_scaling_validates() -> None:
    with pytest.raises(ValueError):
        BandScaling(low=[1, 2, 3], high=[0, 5, 6])
    with pytest.raises(ValueError):
        BandScaling(low=[1, 2], high=[3, 4, 5])


# --- writing masks ---------------------------------------------------------------------------


def _assert_cog_like(path: Path, info: raster.RasterInfo, expected: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # masks of plain images
        ds = rasterio.open(path)
    with ds:
        profile = ds.profile
        assert profile["tiled"] and (profile["blockxsize"], profile["blockysize"]) == (512, 512)
        assert profile["compress"] == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (info.width, info.height, 1, "uint8")
        assert tuple(ds.transform[:6]) == info.transform
        assert (ds.crs.to_wkt() if ds.crs else None) == info.crs
        np.testing.assert_array_equal(ds.read(1), expected)
        if max(info.width, info.height) > 512:
            assert ds.overviews(1)


def test_mask_writer_produces_a_cog_with_the_input_georeferencing(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "scene.tif", 2048, 1536, 3, "uint16", pixel_size=(10.0, 15.0))
    info = read_info(str(path))
    mask = _mask_pattern(1536, 2048)
    destination = tmp_path / "out" / "nested" / "mask.tif"
    with MaskRasterWriter(str(destination), info) as writer:
        for y0 in range(0, 1536, 700):  # windows deliberately not block-aligned
            for x0 in range(0, 2048, 900):
                y1, x1 = min(1536, y0 + 700), min(2048, x0 + 900)
                writer.write((y0, x0, y1, x1), mask[y0:y1, x0:x1])
    _assert_cog_like(destination, info, mask)
    with rasterio.open(destination) as ds:
        assert ds.nodata == 0
    assert os.listdir(destination.parent) == ["mask.tif"]


def test_gdalinfo_reads_the_cog(tmp_path: Path) -> None:
    assert shutil.which("gdalinfo"), (
        "install GDAL's command-line tools (Debian package gdal-bin; `make test` does)"
    )
    path = make_geotiff(tmp_path / "scene.tif", 1024, 768, 1, "uint8")
    info = read_info(str(path))
    write_geotiff_mask(str(tmp_path / "mask.tif"), info, _mask_pattern(768, 1024))
    out = subprocess.run(["gdalinfo", str(tmp_path / "mask.tif")], capture_output=True, text=True, check=True)
    assert "LAYOUT=COG" in out.stdout and "32633" in out.stdout and "Overviews" in out.stdout


def test_mask_of_a_plain_image_is_a_plain_tiled_tiff(tmp_path: Path) -> None:
    path = make_geotiff(tmp_path / "plain.tif", 700, 300, 3, crs=None)
    info = read_info(str(path))
    mask = _mask_pattern(300, 700)
    write_geotiff_mask(str(tmp_path / "mask.tif"), info, mask, nodata=None)
    _assert_cog_like(tmp_path / "mask.tif", info, mask)
    written = read_info(str(tmp_path / "mask.tif"))
    assert written.crs is None and written.nodata is None and not written.is_georeferenced


def test_mask_writer_leaves_nothing_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = read_info(str(make_geotiff(tmp_path / "scene.tif", 600, 500, 1, "uint8")))
    out_dir, temp_dir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    temp_dir.mkdir()
    destination = out_dir / "mask.tif"
    with (
        pytest.raises(RuntimeError, match="model crashed"),
        MaskRasterWriter(str(destination), info, temp_dir=str(temp_dir)) as writer,
    ):
        writer.write((0, 0, 100, 100), np.ones((100, 100), np.uint8))
        raise RuntimeError("model crashed")
    assert os.listdir(out_dir) == [] and os.listdir(temp_dir) == []

    # A failing COG conversion keeps the previous output intact and cleans both places.
    destination.write_bytes(b"previous output")

    def broken_copy(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"half a COG")
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.shutil, "copy", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        write_geotiff_mask(str(destination), info, np.zeros((500, 600), np.uint8))
    assert os.listdir(out_dir) == ["mask.tif"] and destination.read_bytes() == b"previous output"

    with (
        pytest.raises(ValueError, match="uint8 mask"),
        MaskRasterWriter(str(destination), info, temp_dir=str(temp_dir)) as writer,
    ):
        writer.write((0, 0, 10, 10), np.ones((10, 11), np.uint8))
    assert os.listdir(temp_dir) == []


def test_encode_nodata_reserves_the_nodata_value() -> None:
    mask = np.array([[0, 0, 200], [255, 7, 0]], np.uint8)
    valid = np.array([[True, False, True], [True, True, False]])
    np.testing.assert_array_equal(encode_nodata(mask, valid, 0), [[1, 0, 200], [255, 7, 0]])
    np.testing.assert_array_equal(encode_nodata(mask, valid, 255), [[0, 255, 200], [254, 7, 255]])
    np.testing.assert_array_equal(encode_nodata(mask, None, 0), mask)
    np.testing.assert_array_equal(encode_nodata(mask, valid, None), mask)


# --- staged chunks ---------------------------------------------------------------------------


def test_assemble_mask_from_staged_chunks(tmp_path: Path) -> None:
    path = make_geotiff(
        tmp_path / "scene.tif", 2048, 1536, 3, "uint16", nodata=0, nodata_region=(0, 0, 300, 400)
    )
    info = read_info(str(path))
    scale = compute_band_scaling(str(path))
    chunks = plan_chunks(info.height, info.width, 1024, 64)
    staging = str(tmp_path / "staging")
    expected = np.zeros((info.height, info.width), np.uint8)
    for chunk in chunks:  # what a worker does: read with halo, "segment", keep the core
        image, valid = read_window(str(path), chunk.read, scale=scale)
        y0, x0, y1, x1 = chunk.core_in_read
        core = encode_nodata(image[y0:y1, x0:x1, 0], valid[y0:y1, x0:x1], 0)
        uri = write_chunk(staging, chunk, core)
        assert uri == chunk_uri(staging, chunk) and uri.endswith(f"{chunk.row:05d}_{chunk.col:05d}.tif")
        np.testing.assert_array_equal(read_chunk(staging, chunk), core)
        cy0, cx0, cy1, cx1 = chunk.core
        expected[cy0:cy1, cx0:cx1] = core
    assert (expected[:300, :400] == 0).all() and (expected[300:] > 0).all()

    destination = tmp_path / "masks" / "scene.tif"
    assemble_mask(str(destination), info, chunks, staging)
    _assert_cog_like(destination, info, expected)
    assert not Path(staging).exists()


def test_assemble_mask_refuses_missing_or_partial_chunks(tmp_path: Path) -> None:
    info = read_info(str(make_geotiff(tmp_path / "scene.tif", 300, 200, 1, "uint8")))
    chunks = plan_chunks(200, 300, 128, 16)
    staging = tmp_path / "staging"
    for chunk in chunks[:-1]:
        y0, x0, y1, x1 = chunk.core
        write_chunk(str(staging), chunk, np.full((y1 - y0, x1 - x0), 9, np.uint8))
    destination = tmp_path / "mask.tif"
    with pytest.raises(FileNotFoundError, match=r"00001_00002\.tif"):
        assemble_mask(str(destination), info, chunks, str(staging))
    assert not destination.exists() and len(os.listdir(staging)) == len(chunks) - 1
    with pytest.raises(ValueError, match="full plan_chunks"):
        assemble_mask(str(destination), info, chunks[:-1], str(staging))
    with pytest.raises(ValueError, match="uint8 mask"):
        write_chunk(str(staging), chunks[0], np.zeros((5, 5), np.uint8))


# --- other filesystems -----------------------------------------------------------------------


def test_reads_through_fsspec_file_objects(tmp_path: Path) -> None:
    import fsspec

    path = make_geotiff(tmp_path / "scene.tif", 120, 80, 3, "uint8")
    memory = fsspec.filesystem("memory")
    memory.pipe_file("/raster-test/scene.tif", path.read_bytes())
    try:
        uri = "memory://raster-test/scene.tif"
        assert read_info(uri) == read_info(str(path))
        image, _ = read_window(uri, (10, 20, 70, 100))
        np.testing.assert_array_equal(image, read_window(str(path), (10, 20, 70, 100))[0])
    finally:
        memory.rm("/raster-test", recursive=True)


def test_s3_read_and_cog_upload(s3_server, s3_bucket: str, tmp_path: Path) -> None:
    path = make_geotiff(
        tmp_path / "scene.tif", 1100, 700, 4, "uint16", nodata=0, nodata_region=(0, 0, 64, 64)
    )
    s3_server.filesystem().put_file(str(path), f"{s3_bucket}/scenes/scene.tif")
    options = _s3(s3_server)
    uri = f"s3://{s3_bucket}/scenes/scene.tif"

    info = read_info(uri, s3=options)
    assert info == read_info(str(path))
    scale = compute_band_scaling(uri, bands=[3, 2, 1], s3=options)
    assert scale == compute_band_scaling(str(path), bands=[3, 2, 1])
    image, valid = read_window(uri, (32, 40, 400, 1000), bands=[3, 2, 1], scale=scale, s3=options)
    local_image, local_valid = read_window(str(path), (32, 40, 400, 1000), bands=[3, 2, 1], scale=scale)
    np.testing.assert_array_equal(image, local_image)
    np.testing.assert_array_equal(valid, local_valid)

    chunks = plan_chunks(info.height, info.width, 512, 32)
    staging = f"s3://{s3_bucket}/staging/scene"
    expected = _mask_pattern(info.height, info.width)
    for chunk in chunks:
        y0, x0, y1, x1 = chunk.core
        write_chunk(staging, chunk, expected[y0:y1, x0:x1], s3=options)
    destination = f"s3://{s3_bucket}/masks/scene.tif"
    assemble_mask(destination, info, chunks, staging, s3=options)
    raw = s3_server.filesystem()
    assert not raw.exists(f"{s3_bucket}/staging/scene/00000_00000.tif")
    raw.get_file(f"{s3_bucket}/masks/scene.tif", str(tmp_path / "downloaded.tif"))
    _assert_cog_like(tmp_path / "downloaded.tif", info, expected)
    # GDAL reads the uploaded COG in place, too.
    assert read_info(destination, s3=options).width == info.width

    with pytest.raises(FileNotFoundError, match=f"s3://{s3_bucket}/scenes/missing.tif"):
        read_info(f"s3://{s3_bucket}/scenes/missing.tif", s3=options)
    # A fresh object: GDAL's per-process /vsis3 cache would serve the one read above without a request.
    s3_server.filesystem().put_file(str(path), f"{s3_bucket}/scenes/fresh.tif")
    bad = S3Options(endpoint_url=s3_server.endpoint_url, key=s3_server.key, secret="wrong")
    with pytest.raises(StorageAuthError, match=s3_bucket):
        read_info(f"s3://{s3_bucket}/scenes/fresh.tif", s3=bad)


def test_gdal_s3_options_follow_s3options() -> None:
    options = raster.gdal_s3_options(
        S3Options(endpoint_url="http://127.0.0.1:8333", key="k", secret="s", region="eu-west-1")
    )
    assert options["AWS_S3_ENDPOINT"] == "127.0.0.1:8333"
    assert options["AWS_HTTPS"] == "NO" and options["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert (options["AWS_ACCESS_KEY_ID"], options["AWS_SECRET_ACCESS_KEY"]) == ("k", "s")
    assert options["AWS_REGION"] == "eu-west-1"
    anon = raster.gdal_s3_options(S3Options(endpoint_url="https://minio.example:9000", anon=True))
    assert anon["AWS_HTTPS"] == "YES" and anon["AWS_NO_SIGN_REQUEST"] == "YES"
    assert "AWS_ACCESS_KEY_ID" not in anon


def test_chunk_is_plain_data() -> None:
    chunk = Chunk(row=1, col=2, core=(10, 20, 30, 40), read=(5, 15, 35, 45))
    assert chunk.core_in_read == (5, 5, 25, 25)
    assert hash(chunk) == hash(Chunk(1, 2, (10, 20, 30, 40), (5, 15, 35, 45)))
