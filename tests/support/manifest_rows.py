"""Manifest rows for tests: a full `ok` row, an `error` row, and a reference time."""

from __future__ import annotations

from datetime import UTC, datetime

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ok_row(item: str, run_id: str = "run-1", when: datetime | None = T0, **extra: object) -> dict:
    row = {
        "id": item,
        "source_uri": f"s3://bucket/in/{item}.jpg",
        "relative_path": f"{item}.jpg",
        "source_size": 1234,
        "source_version": "etag-1",
        "width": 640,
        "height": 480,
        "status": "ok",
        "mask_uri": f"s3://bucket/out/masks/{item}.png",
        "variant": "general",
        "weights_sha256": "random",
        "resolution": "1024x1024",
        "dtype": "float16",
        "decode_seconds": 0.01,
        "infer_seconds": 0.02,
        "encode_seconds": 0.003,
        "mean_confidence": 0.875,
        "uncertain_fraction": 0.125,
        "foreground_fraction": 0.25,
        "is_empty": False,
        "is_full": False,
        "tile_count": 1,
        "chunk_count": 1,
        "run_id": run_id,
        "processed_at": when,
    }
    row.update(extra)
    return row


def error_row(item: str, run_id: str = "run-1", when: datetime | None = T0, **extra: object) -> dict:
    row = {
        "id": item,
        "source_uri": f"s3://bucket/in/{item}.jpg",
        "status": "error",
        "error": f"s3://bucket/in/{item}.jpg: not found",
        "run_id": run_id,
        "processed_at": when,
    }
    row.update(extra)
    return row
