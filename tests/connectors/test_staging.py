"""Staged scene chunks across runs: keyed by settings and scene version, swept when stale."""

import os
import time

from connectors.staging import scene_staging_uri, settings_key, sweep_staging
from connectors.storage import filesystem


def _touch(path, age_seconds=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))


def test_keys_change_with_any_setting_and_with_the_scene_version():
    a = settings_key({"tile": 1024, "overlap": 128, "weights": "w"})
    assert a == settings_key({"weights": "w", "overlap": 128, "tile": 1024}), "key order does not matter"
    assert a != settings_key({"tile": 1024, "overlap": 64, "weights": "w"})
    root = "s3://b/out/staging"
    one = scene_staging_uri(root, a, "scene1", "etag-1")
    assert one.startswith(f"{root}/{a}/scene1-") and one == scene_staging_uri(root, a, "scene1", "etag-1")
    assert one != scene_staging_uri(root, a, "scene1", "etag-2")


def test_sweep_removes_other_settings_and_stale_scenes_only(tmp_path):
    root = tmp_path / "staging"
    _touch(root / "current" / "fresh-v" / "00000_00000.tif")
    _touch(root / "current" / "old-v" / "00000_00000.tif", age_seconds=3 * 3600)
    _touch(root / "current" / "mixed-v" / "00000_00000.tif", age_seconds=3 * 3600)
    _touch(root / "current" / "mixed-v" / "00000_00001.tif")  # written lately: still in use
    _touch(root / "previous" / "fresh-v" / "00000_00000.tif")
    removed = sweep_staging(str(root), "current", time.time() - 3600)
    assert removed == 2
    assert sorted(p.name for p in (root / "current").iterdir()) == ["fresh-v", "mixed-v"]
    assert not (root / "previous").exists()
    assert sweep_staging(str(root), "current", time.time() - 3600) == 0


def test_sweep_of_a_missing_or_remote_staging(tmp_path):
    assert sweep_staging(str(tmp_path / "never"), "k", time.time()) == 0
    fs, _ = filesystem("memory://out")
    fs.pipe("/out/staging/k/scene-v/00000_00000.tif", b"x")
    fs.pipe("/out/staging/other/scene-v/00000_00000.tif", b"x")
    assert sweep_staging("memory://out/staging", "k", time.time() - 60) == 1
    assert fs.exists("/out/staging/k/scene-v/00000_00000.tif") and not fs.exists("/out/staging/other")
