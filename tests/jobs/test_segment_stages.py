"""The segmentation stages called directly on dict-of-NumPy batches, without Ray."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from birefnet_core.size import Size
from connectors.images import encode_mask_png
from connectors.layout import plain_name
from connectors.manifest import read_manifest
from connectors.storage import S3Options
from jobs.common.replicas import ReplicaSpec
from jobs.segment.image_stages import FinishStage, InferenceStage, PrepareStage
from jobs.segment.rows import INFERRED_KEYS, PREPARED_KEYS, RECORD_KEYS, column_batch, rows_of, run_ref

WORK = Size(height=64, width=64)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Prepare and Finish cap torch's threads for the whole process; give later tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    channels = [127 + 120 * np.sin(xx / 9.0), 127 + 120 * np.cos(yy / 7.0), 60 + yy + xx / 2]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def _jpeg(h: int, w: int, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(_smooth_rgb(h, w)).save(buffer, format="JPEG", quality=95, **extra)
    return buffer.getvalue()


def _record(name: str, data: bytes = b"", error: str = "", box: str = "") -> dict:
    return {
        "id": f"id-{name}",
        "uri": f"/in/{name}",
        "relative_path": name,
        "name": plain_name(name),
        "version": "v1",
        "size": len(data),
        "data": data,
        "error": error,
        "box": box,
    }


def _probs(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.clip(np.rint(255 * (0.5 + 0.6 * np.sin(xx / 8.0) * np.cos(yy / 6.0))), 0, 255).astype(np.uint8)


def _inferred(
    name: str, *, height: int, width: int, probs=None, error: str = "", data: bytes = b"", box: str = ""
) -> dict:
    return {
        **_record(name, data, error, box),
        "size": 1234,
        "probs": probs if probs is not None else np.zeros((0, 0), np.uint8),
        "height": height,
        "width": width,
        "decode_seconds": 0.25,
        "infer_seconds": 0.5 if not error else 0.0,
        "weights_sha256": "random",
        "weights_source": "random",
        "dtype": "float32",
        "backend": "torch",
    }


# --- column_batch / rows_of --------------------------------------------------------------------


def test_column_batch_stacks_equal_shape_arrays():
    rows = [{"a": np.full((2, 3), i, np.uint8), "b": i} for i in range(4)]
    batch = column_batch(rows, ["a", "b"])
    assert batch["a"].shape == (4, 2, 3)
    assert batch["a"].dtype == np.uint8
    np.testing.assert_array_equal(batch["a"][:, 0, 0], [0, 1, 2, 3])
    assert batch["b"].dtype == object
    assert batch["b"].tolist() == [0, 1, 2, 3]


def test_column_batch_makes_object_columns_for_ragged_arrays_and_other_values():
    arrays = [np.zeros((0, 0, 3), np.uint8), np.ones((4, 4, 3), np.uint8), np.ones((2, 5, 3), np.uint8)]
    rows = [{"x": a, "s": f"s{i}", "d": bytes([i])} for i, a in enumerate(arrays)]
    batch = column_batch(rows, ["x", "s", "d", "missing"])
    assert batch["x"].dtype == object and batch["x"].shape == (3,)
    for got, want in zip(batch["x"], arrays, strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert batch["s"].tolist() == ["s0", "s1", "s2"]
    assert batch["d"].tolist() == [b"\x00", b"\x01", b"\x02"]
    assert batch["missing"].tolist() == [None, None, None]


def test_column_batch_mixed_arrays_and_scalars_is_an_object_column():
    batch = column_batch([{"x": np.zeros(2)}, {"x": 5}], ["x"])
    assert batch["x"].dtype == object
    assert batch["x"][1] == 5


def test_column_batch_of_no_rows_has_empty_columns():
    batch = column_batch([], ["a", "b"])
    assert set(batch) == {"a", "b"}
    assert all(len(column) == 0 for column in batch.values())


def test_rows_of_inverts_column_batch():
    rows = [
        {"id": "a", "n": 1, "pixels": np.full((2, 2), 7, np.uint8)},
        {"id": "b", "n": 2, "pixels": np.full((2, 2), 9, np.uint8)},
    ]
    back = list(rows_of(column_batch(rows, ["id", "n", "pixels"])))
    assert len(back) == 2
    for got, want in zip(back, rows, strict=True):
        assert set(got) == set(want)
        assert (got["id"], got["n"]) == (want["id"], want["n"])
        np.testing.assert_array_equal(got["pixels"], want["pixels"])


def test_rows_of_plain_dict_of_lists_and_empty_batch():
    assert list(rows_of({"a": [1, 2], "b": ["x", "y"]})) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert list(rows_of({})) == []


# --- PrepareStage ------------------------------------------------------------------------------


def _prepare(records: list[dict], keep_bytes: bool = False, max_pixels: int = 10**8) -> list[dict]:
    stage = PrepareStage("lite", WORK, keep_bytes=keep_bytes, max_pixels=max_pixels)
    batch = stage(column_batch(records, RECORD_KEYS))
    assert tuple(batch) == PREPARED_KEYS
    return list(rows_of(batch))


def test_prepare_turns_a_jpeg_into_working_size_pixels_with_the_original_size():
    data = _jpeg(50, 80)
    (row,) = _prepare([_record("a/b.jpg", data)])
    assert row["error"] == ""
    assert (row["height"], row["width"]) == (50, 80)
    assert row["pixels"].shape == (*WORK, 3)
    assert row["pixels"].dtype == np.uint8
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(image.convert("RGB").resize(WORK[::-1], Image.Resampling.BILINEAR))
    assert np.abs(row["pixels"].astype(int) - expected.astype(int)).max() <= 2
    assert row["data"] == b""  # bytes are dropped when cut-outs do not need them
    assert row["decode_seconds"] > 0.0
    assert (row["id"], row["uri"], row["version"]) == ("id-a/b.jpg", "/in/a/b.jpg", "v1")


def test_prepare_keeps_bytes_when_asked():
    data = _jpeg(40, 40)
    (row,) = _prepare([_record("a.jpg", data)], keep_bytes=True)
    assert row["error"] == ""
    assert row["data"] == data


def test_prepare_applies_exif_orientation_to_the_original_size():
    (row,) = _prepare([_record("r.jpg", _jpeg(48, 64, orientation=6))])
    assert (row["height"], row["width"]) == (64, 48)


@pytest.mark.parametrize("keep_bytes", [False, True])
def test_prepare_turns_garbage_into_an_error_naming_the_uri(keep_bytes):
    good, bad = _record("good.jpg", _jpeg(40, 40)), _record("dir/bad.jpg", b"not an image")
    rows = _prepare([good, bad], keep_bytes=keep_bytes)
    assert rows[0]["error"] == ""
    error_row = rows[1]
    assert "/in/dir/bad.jpg" in error_row["error"]
    assert error_row["pixels"].shape == (0, 0, 3)
    assert (error_row["height"], error_row["width"]) == (0, 0)
    assert error_row["data"] == b""  # never carried on, even when bytes are kept


def test_prepare_over_the_pixel_limit_is_an_error_naming_the_uri():
    (row,) = _prepare([_record("big.jpg", _jpeg(50, 80))], max_pixels=50 * 80 - 1)
    assert row["error"].startswith("/in/big.jpg")
    assert "pixel limit" in row["error"]


def test_prepare_passes_an_earlier_error_through():
    record = _record("gone.jpg", error="/in/gone.jpg: not found")
    (row,) = _prepare([record], keep_bytes=True)
    assert row["error"] == "/in/gone.jpg: not found"
    assert row["pixels"].shape == (0, 0, 3)


# --- InferenceStage ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inferred() -> tuple[list[dict], list[dict]]:
    """One forward pass of random lite weights at 64 x 64 on CPU, for an ok row and an error row."""
    stage = InferenceStage(
        ReplicaSpec("random", variant="lite", size=WORK, device="cpu", dtype="float32", s3=S3Options())
    )
    ok = {
        **_record("ok.jpg"),
        "pixels": _smooth_rgb(*WORK),
        "height": 50,
        "width": 80,
        "decode_seconds": 0.1,
    }
    failed = {
        **_record("bad.jpg", error="/in/bad.jpg: cannot decode image"),
        "pixels": np.zeros((0, 0, 3), np.uint8),
        "height": 0,
        "width": 0,
        "decode_seconds": 0.2,
    }
    rows = [ok, failed]
    batch = stage(column_batch(rows, PREPARED_KEYS))
    assert set(batch) == set(INFERRED_KEYS)
    return rows, list(rows_of(batch))


def test_inference_gives_uint8_probabilities_at_working_size(inferred):
    _, (ok, _) = inferred
    assert ok["error"] == ""
    assert isinstance(ok["probs"], np.ndarray)
    assert ok["probs"].dtype == np.uint8
    assert ok["probs"].shape == WORK
    assert ok["infer_seconds"] > 0.0
    assert (ok["height"], ok["width"]) == (50, 80)


def test_inference_records_the_model_identity(inferred):
    _, out = inferred
    for row in out:
        assert (row["weights_sha256"], row["weights_source"], row["dtype"]) == ("random", "random", "float32")


def test_inference_passes_error_rows_through(inferred):
    (_, given), (_, failed) = inferred
    for key in RECORD_KEYS:
        assert failed[key] == given[key]
    assert failed["probs"].shape == (0, 0)
    assert failed["infer_seconds"] == 0.0
    assert failed["decode_seconds"] == 0.2


def test_inference_output_does_not_carry_input_pixels(inferred):
    assert "pixels" not in INFERRED_KEYS
    _, out = inferred
    assert all("pixels" not in row for row in out)


# --- FinishStage -------------------------------------------------------------------------------


def _finish(root: Path, rows: list[dict], outputs=("mask",)) -> dict[str, np.ndarray]:
    run = run_ref("run-1", "lite", WORK)
    stage = FinishStage(str(root), list(outputs), refine_foreground=False, s3=S3Options(), run=run)
    return stage(column_batch(rows, INFERRED_KEYS))


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_finish_writes_a_mask_of_the_original_size(tmp_path):
    probs = _probs()
    _finish(tmp_path, [_inferred("dir/a.jpg", height=50, width=80, probs=probs)])
    path = tmp_path / "masks" / "dir" / "a.png"
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (80, 50)
        assert image.mode == "L"
        mask = np.asarray(image).copy()
    # written by encode_mask_png: re-encoding the decoded pixels gives the same bytes
    assert data == encode_mask_png(mask)
    expected = np.asarray(Image.fromarray(probs).resize((80, 50), Image.Resampling.BILINEAR))
    assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1


def test_finish_writes_one_manifest_part_with_status_and_quality(tmp_path):
    probs = _probs()
    rows = [
        _inferred("dir/a.jpg", height=50, width=80, probs=probs),
        _inferred("bad.jpg", height=0, width=0, error="/in/bad.jpg: cannot decode image"),
    ]
    started = datetime.now(UTC)
    out = _finish(tmp_path, rows)
    assert out["status"].tolist() == ["ok", "error"]
    assert out["error"].tolist() == ["", "/in/bad.jpg: cannot decode image"]
    assert out["id"].tolist() == ["id-dir/a.jpg", "id-bad.jpg"]

    parts = list((tmp_path / "manifest").glob("*.parquet"))
    assert len(parts) == 1
    table = {r["id"]: r for r in read_manifest(str(tmp_path)).to_pylist()}
    assert set(table) == {"id-dir/a.jpg", "id-bad.jpg"}

    ok = table["id-dir/a.jpg"]
    p = probs.astype(np.float64) / 255
    assert ok["status"] == "ok" and ok["error"] is None
    assert ok["mask_uri"] == str(tmp_path / "masks" / "dir" / "a.png")
    assert ok["cutout_uri"] is None
    assert (ok["width"], ok["height"]) == (80, 50)
    assert ok["source_uri"] == "/in/dir/a.jpg" and ok["relative_path"] == "dir/a.jpg"
    assert (ok["source_size"], ok["source_version"]) == (1234, "v1")
    assert ok["mean_confidence"] == pytest.approx(np.mean(np.abs(2 * p - 1)), abs=1e-6)
    assert ok["uncertain_fraction"] == pytest.approx(np.mean((p > 0.1) & (p < 0.9)), abs=1e-6)
    assert ok["foreground_fraction"] == pytest.approx(np.mean(p >= 0.5), abs=1e-6)
    assert ok["is_empty"] is False and ok["is_full"] is False
    assert (ok["run_id"], ok["variant"], ok["resolution"]) == ("run-1", "lite", "64x64")
    assert (ok["weights_sha256"], ok["weights_source"], ok["dtype"]) == ("random", "random", "float32")
    assert ok["decode_seconds"] == pytest.approx(0.25) and ok["infer_seconds"] == pytest.approx(0.5)
    assert ok["encode_seconds"] > 0.0 and started <= ok["processed_at"] <= datetime.now(UTC)

    bad = table["id-bad.jpg"]
    assert bad["status"] == "error"
    assert bad["error"] == "/in/bad.jpg: cannot decode image"
    for column in ("mask_uri", "cutout_uri", "mean_confidence", "uncertain_fraction", "is_empty", "width"):
        assert bad[column] is None, column
    assert bad["infer_seconds"] is None
    assert bad["run_id"] == "run-1"


def test_finish_writes_only_the_manifest_for_an_error_row(tmp_path):
    _finish(tmp_path, [_inferred("bad.jpg", height=0, width=0, error="/in/bad.jpg: cannot decode image")])
    files = _files(tmp_path)
    assert len(files) == 1
    assert files[0].startswith("manifest/part-run-1-") and files[0].endswith(".parquet")
    (row,) = read_manifest(str(tmp_path)).to_pylist()
    assert row["status"] == "error"


def test_finish_writes_a_cutout_with_the_mask_as_alpha(tmp_path):
    data = _jpeg(50, 80)
    row = _inferred("c.jpg", height=50, width=80, probs=_probs(), data=data)
    _finish(tmp_path, [row], outputs=("mask", "cutout"))
    with Image.open(tmp_path / "masks" / "c.png") as image:
        mask = np.asarray(image).copy()
    with Image.open(tmp_path / "cutouts" / "c.png") as image:
        assert image.mode == "RGBA" and image.size == (80, 50)
        cutout = np.asarray(image).copy()
    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(cutout[..., 3], mask)
    np.testing.assert_array_equal(cutout[..., :3], rgb)
    (entry,) = read_manifest(str(tmp_path)).to_pylist()
    assert entry["cutout_uri"] == str(tmp_path / "cutouts" / "c.png")


def test_finish_turns_a_write_failure_into_an_error_row(tmp_path):
    # "masks/../../escape.png" would land beside the output root, so the write is refused
    out = _finish(tmp_path, [_inferred("../../escape.jpg", height=50, width=80, probs=_probs())])
    assert out["status"].tolist() == ["error"]
    assert out["error"][0].startswith("/in/../../escape.jpg: writing outputs failed")
    assert not (tmp_path.parent / "escape.png").exists()
    assert [f for f in _files(tmp_path) if not f.startswith("manifest/")] == []
    (row,) = read_manifest(str(tmp_path)).to_pylist()
    assert row["status"] == "error" and row["mask_uri"] is None


def _jpeg_with(image, **save) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **save)
    return buffer.getvalue()


@pytest.mark.parametrize("box", [None, "10,20,70,100"])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_fast_jpeg_path_matches_pillow(mode, box):
    from PIL import Image

    from birefnet_core.box_guidance import Box, BoxGuide
    from birefnet_core.preprocessing import prepare_image, to_rgb_uint8
    from birefnet_core.variants import get_variant
    from connectors.images import decode_image
    from connectors.synthetic import object_scene
    from jobs.common.image_prediction import prepare_encoded

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = _jpeg_with(object_scene(120, 80, 3).convert(mode), exif=exif.tobytes())
    fast = prepare_encoded(data, "x.jpg", get_variant("lite"), Size(64, 64), 10**7, box, 0.1)
    rgb = to_rgb_uint8(decode_image(data, "x.jpg"))
    assert fast.size == rgb.shape[:2] == (120, 80)
    if box:
        assert fast.guide == BoxGuide.for_image(Box.parse(box), fast.size, 0.1)
        rgb = fast.guide.crop(rgb)
    reference = prepare_image(rgb, Size(64, 64)).astype(int)
    assert np.abs(fast.pixels.astype(int) - reference).max() <= 3


def test_a_bad_box_is_an_error_row_naming_the_input_and_the_box():
    from jobs.segment.image_stages import PrepareStage

    stage = PrepareStage("lite", Size(64, 64), keep_bytes=False, max_pixels=10**7)
    rows = [_record("a.jpg", _jpeg(40, 60), box=box) for box in ("1,2,3", "70,0,90,10", "0,0,30,20")]
    for row, name in zip(rows, "abc", strict=True):
        row.update(id=f"id-{name}", uri=f"/in/{name}.jpg")
    out = list(rows_of(stage(column_batch(rows, RECORD_KEYS))))
    assert out[0]["error"] == "/in/a.jpg: box '1,2,3' is not four numbers x0,y0,x1,y1"
    assert out[1]["error"] == "/in/b.jpg: box 70,0,90,10 lies outside the 60x40 image"
    assert out[2]["error"] == "" and (out[2]["height"], out[2]["width"]) == (40, 60)


def test_finish_pastes_a_boxed_mask_into_a_full_size_mask_zero_outside_the_box(tmp_path):
    full = np.full((64, 64), 200, np.uint8)
    _finish(tmp_path, [_inferred("boxed.jpg", height=50, width=80, probs=full, box="10,5,40,30")])
    with Image.open(tmp_path / "masks" / "boxed.png") as image:
        mask = np.asarray(image).copy()
    assert mask.shape == (50, 80)
    assert (mask[5:30, 10:40] == 200).all()
    mask[5:30, 10:40] = 0
    assert not mask.any()
    (row,) = read_manifest(str(tmp_path)).to_pylist()
    assert row["box"] == "10,5,40,30"
