"""The scene path's CPU work (planning, reading and tiling chunks, blending, staging, assembling
and committing) must never load torch: a worker that only cuts, blends and stitches would
otherwise hold about a gigabyte of torch it never calls, which is what pushed its peak RSS past
the scene path's memory target."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm")
PROBE = f"""
import sys, tempfile
from pathlib import Path
import jobs.segment.scene_commits, jobs.segment.scene_planning
from tests.support.geotiff_scenes import make_geotiff
from tests.support.scene_harness import plan_of, run_scene, settings, stand_in_inference

work = Path(tempfile.mkdtemp())
scene = make_geotiff(work / "scene.tif", 300, 200, 3, dtype="uint16")
plan = plan_of(scene, settings(str(work / "staging"), 128, 16, tile=64))
run = run_scene(plan, stand_in_inference(lambda tiles: tiles[..., 0].copy()), work / "out", 64, 16)
assert run.row["status"] == "ok", run.row["error"]
print(",".join(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_a_scene_runs_through_its_cpu_stages_without_loading_torch() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the scene path's CPU stages load {out.stdout.strip()}"
