"""Staged chunks and their assembly: chunk TIFFs with overviews and stats, the stitched COG, resume listings."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rio_cogeo.cogeo import cog_validate

from connectors import storage
from connectors.raster import (
    Chunk,
    RasterInfo,
    RasterReadError,
    assemble_mask,
    chunk_uri,
    plan_chunks,
    read_chunk,
    read_chunk_stats,
    read_info,
    remove_staging,
    staged_chunks,
    write_chunk,
    write_geotiff_mask,
)
from connectors.raster.chunk_staging import chunk_overview_factors, staged_shape, stitched_levels
from tests.support.geotiff_scenes import make_geotiff


def _soft_mask(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blobs with soft 8-bit edges, noise at the edges, background 1 and a nodata (0) corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    field = np.sin(xx / 37.0 + np.sin(yy / 53.0)) + np.cos(yy / 41.0 + 0.5 * np.sin(xx / 29.0)) - 0.3
    mask = np.rint(254.0 / (1.0 + np.exp(-8.0 * field)) + 1.0)
    soft = (mask > 3) & (mask < 252)
    mask[soft] += rng.integers(-4, 5, size=int(soft.sum()))
    mask = np.clip(mask, 1, 255).astype(np.uint8)
    mask[xx + yy < min(height, width) // 3] = 0
    return mask


def _stage(staging: str, chunks: list[Chunk], mask: np.ndarray, **kwargs: object) -> None:
    for chunk in chunks:
        y0, x0, y1, x1 = chunk.core
        write_chunk(staging, chunk, mask[y0:y1, x0:x1], **kwargs)  # type: ignore[arg-type]


def _scene(tmp_path: Path, height: int, width: int, crs: str | None = "EPSG:32633") -> RasterInfo:
    return read_info(str(make_geotiff(tmp_path / "scene.tif", width, height, 1, "uint8", crs=crs)))


def _open(path: Path | str, **kwargs: object) -> rasterio.io.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, **kwargs)


def _overview(path: Path | str, index: int) -> np.ndarray:
    with _open(path, overview_level=index) as ds:
        return ds.read(1).astype(np.int64)


def _average2(values: np.ndarray, nodata: int = 0) -> np.ndarray:
    """2 x 2 AVERAGE skipping nodata, rounded half up, as GDAL computes it."""
    h, w = values.shape[0] // 2, values.shape[1] // 2
    blocks = values[: 2 * h, : 2 * w].reshape(h, 2, w, 2).astype(np.int64)
    valid = blocks != nodata
    count = valid.sum(axis=(1, 3))
    total = (blocks * valid).sum(axis=(1, 3))
    return np.where(count > 0, (total + count // 2) // np.maximum(count, 1), nodata)


# --- staged chunks ---------------------------------------------------------------------------


def test_chunk_overview_factors_follow_divisibility() -> None:
    assert staged_shape(4096, 4096) == (4096, 4096) and staged_shape(4096, 1808) == (4096, 2048)
    assert staged_shape(300, 188) == (512, 512) and staged_shape(513, 1) == (1024, 512)
    assert chunk_overview_factors(4096, 4096) == [2**k for k in range(1, 13)]  # down to 1 px
    assert chunk_overview_factors(4096, 2048) == [2**k for k in range(1, 12)]
    assert chunk_overview_factors(3072, 4096) == [2**k for k in range(1, 11)]  # 3072 = 1024 * 3
    assert chunk_overview_factors(300, 188) == [2, 4]


@pytest.mark.parametrize(("height", "width"), [(1024, 512), (300, 188)])
def test_a_staged_chunk_is_a_tiled_tiff_with_average_overviews(
    tmp_path: Path, height: int, width: int
) -> None:
    mask = _soft_mask(height, width)
    chunk = Chunk(row=3, col=12, core=(0, 0, height, width), read=(0, 0, height, width))
    staging = str(tmp_path / "staging")
    uri = write_chunk(staging, chunk, mask)
    assert uri == chunk_uri(staging, chunk) and uri.endswith("00003_00012.tif")
    padded_shape = staged_shape(height, width)
    with _open(uri) as ds:
        assert ds.shape == padded_shape and ds.block_shapes == [(512, 512)]
        assert ds.profile["compress"] == "deflate" and ds.nodata == 0
        assert ds.overviews(1) == chunk_overview_factors(*padded_shape)
    np.testing.assert_array_equal(read_chunk(staging, chunk), mask)
    # Chunks with and without nodata pixels take different paths in GDAL; both skip nodata,
    # and the nodata padding never weighs in.
    for values in (mask, np.maximum(mask, 1)):
        write_chunk(staging, chunk, values)
        padded = np.zeros(padded_shape, np.uint8)
        padded[:height, :width] = values
        np.testing.assert_array_equal(_overview(uri, 0), _average2(padded))
        np.testing.assert_array_equal(_overview(uri, 1), _average2(_average2(padded)))
    assert os.listdir(tmp_path / "staging") == ["00003_00012.tif"]


def test_stats_round_trip(tmp_path: Path) -> None:
    staging = str(tmp_path / "staging")
    chunk = Chunk(0, 1, (0, 512, 100, 612), (0, 500, 100, 624))
    stats = {"histogram": "[0, 3, 5]", "seam_sum": "12.5", "weights_source": "", "note": "ü = <&>\nx"}
    write_chunk(staging, chunk, np.full((100, 100), 9, np.uint8), stats=stats)
    assert read_chunk_stats(staging, chunk) == stats
    info = RasterInfo(
        612, 100, 1, ("uint8",), None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), None, False, ((100, 612),)
    )
    left = Chunk(0, 0, (0, 0, 100, 512), (0, 0, 100, 624))
    write_chunk(staging, left, np.full((100, 512), 7, np.uint8), stats={"seam_sum": "1.0"})
    staged = assemble_mask(str(tmp_path / "mask.tif"), info, [left, chunk], staging, delete_staging=False)
    assert staged == {left: {"seam_sum": "1.0"}, chunk: stats}, (
        "assembly hands back what read_chunk_stats reads"
    )
    write_chunk(staging, chunk, np.full((100, 100), 9, np.uint8))
    assert read_chunk_stats(staging, chunk) == {}
    for bad in ({"a=b": "1"}, {"": "1"}, {"n": 1}):
        with pytest.raises(ValueError, match="stats"):
            write_chunk(staging, chunk, np.full((100, 100), 9, np.uint8), stats=bad)  # type: ignore[arg-type]


def test_read_chunk_errors_name_the_chunk(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    chunk = Chunk(2, 5, (0, 0, 10, 10), (0, 0, 10, 10))
    with pytest.raises(FileNotFoundError, match=r"00002_00005\.tif"):
        read_chunk(str(staging), chunk)
    with pytest.raises(FileNotFoundError, match=r"00002_00005\.tif"):
        read_chunk_stats(str(staging), chunk)
    staging.mkdir()
    (staging / "00002_00005.tif").write_bytes(b"half a TIFF")
    with pytest.raises(RasterReadError, match=r"00002_00005\.tif"):
        read_chunk(str(staging), chunk)


def test_staged_chunks_sees_only_complete_chunks(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    assert staged_chunks(str(staging)) == set()  # no folder yet
    chunks = plan_chunks(300, 700, 256, 0)
    _stage(str(staging), chunks[:4], _soft_mask(300, 700))
    # What an interrupted local write leaves (storage.temp_path_beside), and a stranger.
    Path(storage.temp_path_beside(str(staging / "00001_00001.tif"))).write_bytes(b"half")
    (staging / "notes.txt").write_text("hello")
    assert staged_chunks(str(staging)) == {(0, 0), (0, 1), (0, 2), (1, 0)}
    assert staged_chunks(f"file://{staging}") == {(0, 0), (0, 1), (0, 2), (1, 0)}
    remove_staging(str(staging))
    assert not staging.exists()
    remove_staging(str(staging))  # missing is fine


# --- assembly --------------------------------------------------------------------------------


def _assert_valid_cog(path: Path, info: RasterInfo, expected: np.ndarray, nodata: int | None = 0) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        valid, errors, _ = cog_validate(str(path), quiet=True)
    assert valid and not errors, errors
    out = subprocess.run(["gdalinfo", str(path)], capture_output=True, text=True, check=True).stdout
    assert "LAYOUT=COG" in out and "Overviews:" in out and "Block=512x512" in out
    with _open(path) as ds:
        assert (ds.width, ds.height, ds.count, ds.dtypes[0]) == (info.width, info.height, 1, "uint8")
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert (ds.crs.to_wkt() if ds.crs else None) == info.crs
        assert tuple(ds.transform[:6]) == info.transform
        assert ds.nodata == nodata
        assert len(ds.overviews(1)) == len(_overview_sizes(info))
        np.testing.assert_array_equal(ds.read(1), expected)


def _overview_sizes(info: RasterInfo) -> list[tuple[int, int]]:
    sizes, width, height = [], info.width, info.height
    while width > 512 or height > 512:
        width, height = width // 2, height // 2
        sizes.append((width, height))
    return sizes


@pytest.mark.parametrize(("height", "width", "crs"), [(1500, 1300, "EPSG:32633"), (300, 700, None)])
def test_assembled_cog_is_the_mosaic_with_stitched_overviews(
    tmp_path: Path, height: int, width: int, crs: str | None
) -> None:
    info = _scene(tmp_path, height, width, crs)
    mask = _soft_mask(height, width)
    chunks = plan_chunks(height, width, 512, 32)
    staging = str(tmp_path / "staging")
    _stage(staging, chunks, mask)
    destination = tmp_path / "masks" / "scene.tif"
    assemble_mask(str(destination), info, chunks, staging, threads=2)
    _assert_valid_cog(destination, info, mask)
    assert not Path(staging).exists()
    assert os.listdir(destination.parent) == ["scene.tif"]

    # The same mask converted the old way, with its overviews recomputed from full resolution.
    write_geotiff_mask(str(tmp_path / "recomputed.tif"), info, mask)
    # Measured: identical (max difference 0) wherever the chunk sides are even.
    assert np.abs(_overview(destination, 0) - _overview(tmp_path / "recomputed.tif", 0)).max() <= 1
    if crs is None:
        assert read_info(str(destination)).crs is None and not read_info(str(destination)).is_georeferenced


def test_assembly_copies_the_chunks_overviews(tmp_path: Path) -> None:
    """The COG's overviews are the staged ones, not recomputed: nearest-neighbour chunk overviews show through."""
    info = _scene(tmp_path, 1500, 1300)
    mask = _soft_mask(1500, 1300)
    chunks = plan_chunks(1500, 1300, 512, 0)
    staging = tmp_path / "staging"
    _stage(str(staging), chunks, mask)
    for chunk in chunks:
        with _open(chunk_uri(str(staging), chunk), mode="r+") as ds:
            ds.build_overviews(ds.overviews(1), Resampling.nearest)
    assemble_mask(str(tmp_path / "mask.tif"), info, chunks, str(staging))
    np.testing.assert_array_equal(_overview(tmp_path / "mask.tif", 0), mask[::2, ::2])
    np.testing.assert_array_equal(_overview(tmp_path / "mask.tif", 1), mask[::4, ::4])


def test_odd_sized_scenes_are_stitched_from_whole_blocks(tmp_path: Path) -> None:
    """Edge cores of any size are padded to whole tiles, so every level is stitched; each overview
    pixel averages exactly its 2**k x 2**k block (GDAL's own pyramid of an odd size would drift
    by a pixel across the scene instead)."""
    info = _scene(tmp_path, 1301, 1133)
    mask = _soft_mask(1301, 1133)
    chunks = plan_chunks(1301, 1133, 512, 0)
    assert stitched_levels(chunks) == 9 and len(_overview_sizes(info)) == 2
    _stage(str(tmp_path / "staging"), chunks, mask)
    assemble_mask(str(tmp_path / "mask.tif"), info, chunks, str(tmp_path / "staging"))
    _assert_valid_cog(tmp_path / "mask.tif", info, mask)
    np.testing.assert_array_equal(_overview(tmp_path / "mask.tif", 0), _average2(mask))
    np.testing.assert_array_equal(_overview(tmp_path / "mask.tif", 1), _average2(_average2(mask)))


@pytest.mark.parametrize("case", ["chunks off the 512 grid", "no nodata", "nodata 255"])
def test_assembly_computes_the_overviews_it_cannot_stitch(tmp_path: Path, case: str) -> None:
    chunk_size, nodata = {
        "chunks off the 512 grid": (250, 0),
        "no nodata": (512, None),
        "nodata 255": (512, 255),
    }[case]
    info = _scene(tmp_path, 2100, 1300)
    mask = _soft_mask(2100, 1300)
    chunks = plan_chunks(2100, 1300, chunk_size, 0)
    _stage(str(tmp_path / "staging"), chunks, mask)
    assemble_mask(str(tmp_path / "mask.tif"), info, chunks, str(tmp_path / "staging"), nodata=nodata)
    _assert_valid_cog(tmp_path / "mask.tif", info, mask, nodata=nodata)
    write_geotiff_mask(str(tmp_path / "recomputed.tif"), info, mask, nodata=nodata)
    for index in range(len(_overview_sizes(info))):
        np.testing.assert_array_equal(
            _overview(tmp_path / "mask.tif", index), _overview(tmp_path / "recomputed.tif", index)
        )


def test_a_missing_chunk_is_named_and_nothing_is_published(tmp_path: Path) -> None:
    info = _scene(tmp_path, 1500, 1300)
    chunks = plan_chunks(1500, 1300, 512, 0)
    staging = tmp_path / "staging"
    _stage(str(staging), [c for c in chunks if (c.row, c.col) != (2, 1)], _soft_mask(1500, 1300))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError, match=r"00002_00001\.tif"):
        assemble_mask(str(out / "mask.tif"), info, chunks, str(staging))
    assert os.listdir(out) == []
    assert staged_chunks(str(staging)) == {(c.row, c.col) for c in chunks} - {(2, 1)}


def test_a_damaged_chunk_is_named_and_nothing_is_published(tmp_path: Path) -> None:
    info = _scene(tmp_path, 700, 600)
    chunks = plan_chunks(700, 600, 512, 0)
    staging = tmp_path / "staging"
    _stage(str(staging), chunks, _soft_mask(700, 600))
    Path(chunk_uri(str(staging), chunks[1])).write_bytes(b"not a tiff")
    with pytest.raises(RasterReadError, match=r"00000_00001\.tif"):
        assemble_mask(str(tmp_path / "mask.tif"), info, chunks, str(staging))
    assert not (tmp_path / "mask.tif").exists() and len(staged_chunks(str(staging))) == len(chunks)


def test_remote_staging_is_downloaded_and_removed(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    staging = f"memory://staging-test-{uuid.uuid4().hex}/scene"
    info = _scene(tmp_path, 1100, 900)
    mask = _soft_mask(1100, 900)
    chunks = plan_chunks(1100, 900, 512, 16)
    try:
        _stage(staging, chunks[1:], mask, stats={"histogram": "[1]"})
        assert staged_chunks(staging) == {(c.row, c.col) for c in chunks[1:]}
        with pytest.raises(FileNotFoundError, match=r"memory://.*/scene/00000_00000\.tif"):
            assemble_mask(str(tmp_path / "mask.tif"), info, chunks, staging)
        _stage(staging, chunks[:1], mask, stats={"histogram": "[1]"})
        assert read_chunk_stats(staging, chunks[2]) == {"histogram": "[1]"}
        np.testing.assert_array_equal(read_chunk(staging, chunks[2]), mask[512:1024, :512])
        assemble_mask(str(tmp_path / "mask.tif"), info, chunks, staging)
        _assert_valid_cog(tmp_path / "mask.tif", info, mask)
        assert staged_chunks(staging) == set() and not memory.exists(staging)
        remove_staging(staging)  # missing is fine
        # A memory:// destination too, published in one put.
        _stage(staging, chunks, mask)
        assemble_mask(f"{staging}-mask.tif", info, chunks, staging, delete_staging=False)
        (tmp_path / "downloaded.tif").write_bytes(memory.cat_file(f"{staging}-mask.tif"))
        _assert_valid_cog(tmp_path / "downloaded.tif", info, mask)
        assert len(staged_chunks(staging)) == len(chunks)
    finally:
        memory.rm(staging.removeprefix("memory://").split("/")[0], recursive=True)


def test_gdalinfo_is_installed() -> None:
    assert shutil.which("gdalinfo"), (
        "install GDAL's command-line tools (Debian package gdal-bin; `make test` does)"
    )
