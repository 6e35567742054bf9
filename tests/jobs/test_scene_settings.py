"""The staging key: whatever decides a staged chunk's pixels or its place changes it, nothing else."""

from __future__ import annotations

import pytest

import jobs.segment.scene_planning
from jobs.segment.config import SegmentConfig
from jobs.segment.scene_planning import SceneSettings

BASE = {"input": "in/", "output": "out/"}


def key(**changes: object) -> str:
    return SceneSettings.of(SegmentConfig(**{**BASE, **changes}), "float32", "v1").key


@pytest.mark.parametrize(
    "change",
    [
        {"tile_size": 512},
        {"tile_overlap": 64},
        {"chunk_size": 2048},
        {"chunk_halo": 256},
        {"bands": [3, 2, 1]},
        {"scene_context": 1024},
        {"variant": "lite"},
    ],
)
def test_settings_that_decide_pixels_change_the_key(change: dict[str, object]) -> None:
    assert key(**change) != key()


def test_settings_that_do_not_decide_pixels_keep_the_key() -> None:
    assert key(batch_size=16, num_cpus=2) == key()


def test_another_chunk_placement_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = key()
    monkeypatch.setattr(jobs.segment.scene_planning, "CHUNK_PLAN", "fixed-cuts")
    assert key() != before


def test_the_weights_version_and_precision_change_the_key() -> None:
    config = SegmentConfig(**BASE)
    assert SceneSettings.of(config, "float32", "v2").key != key()
    assert SceneSettings.of(config, "bfloat16", "v1").key != key()
