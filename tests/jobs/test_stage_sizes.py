"""Where the job hands sizes and batches to birefnet_core: WIDTHxHEIGHT at the edges, `Size`
(height, width) inside, and the inference stage grouping ragged rows like `Predictor.predict`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birefnet_core.size import Size
from connectors.storage import S3Options
from jobs.common.replicas import ReplicaSpec
from jobs.segment.config import SegmentConfig
from jobs.segment.image_stages import InferenceStage
from jobs.segment.rows import PREPARED_KEYS, column_batch, rows_of, run_ref


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A CPU inference stage takes every core for the whole process; give later tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_config_resolution_is_width_by_height_and_working_size_height_by_width():
    config = SegmentConfig(input="in/", output="out/", resolution="96x64")
    assert config.resolution == (96, 64)
    assert config.working_size == Size(height=64, width=96)
    assert SegmentConfig(input="in/", output="out/").working_size is None


def test_manifest_resolution_is_spelled_width_by_height():
    assert run_ref("r", "lite", Size(height=64, width=96)).resolution == "96x64"
    assert run_ref("r", "lite-2k", None).resolution == "2560x1440"
    assert run_ref("r", "dynamic", None).resolution == "dynamic"


def _row(index: int, pixels: np.ndarray, error: str = "") -> dict:
    return {"id": f"id-{index}", "uri": f"/in/{index}.png", "relative_path": f"{index}.png",
            "name": f"{index}", "version": "v", "size": 1, "data": b"", "error": error,
            "pixels": pixels, "height": 10, "width": 10, "decode_seconds": 0.0}  # fmt: skip


def test_inference_groups_ragged_rows_by_size_and_keeps_row_order():
    stage = InferenceStage(
        ReplicaSpec(
            "random",
            variant="lite",
            size=Size(64, 64),
            device="cpu",
            dtype="float32",
            s3=S3Options(),
            batch_size=2,
        )
    )
    rng = np.random.default_rng(0)
    shapes = [(64, 64, 3), (64, 96, 3), (3, 64, 64, 3), (64, 64, 3), (0, 0, 3), (64, 64, 3)]
    pixels = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]
    rows = [_row(i, p, error="broken" if p.size == 0 else "") for i, p in enumerate(pixels)]
    batches: list[tuple[int, ...]] = []
    hook = stage.predictor.model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape))

    out = list(rows_of(stage(column_batch(rows, PREPARED_KEYS))))
    hook.remove()

    # The chunk's tiles among themselves, then each working size, `batch_size` at a time.
    assert sorted(batches) == sorted(
        [(2, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 96)]
    )
    assert [row["id"] for row in out] == [row["id"] for row in rows]
    for given, row in zip(pixels, out, strict=True):
        if given.size == 0:
            assert row["error"] == "broken" and row["probs"].shape == (0, 0)
            continue
        alone = stage.predictor.infer(given if given.ndim == 4 else given[None], quantize=True)
        expected = alone if given.ndim == 4 else alone[0]
        assert row["probs"].dtype == np.uint8 and row["probs"].shape == expected.shape
        assert np.abs(row["probs"].astype(int) - expected).max() <= 1  # batch size may move a tie
