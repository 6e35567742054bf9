"""`birefnet segment` / `python -m jobs.segment`: segment an image archive with BiRefNet on Ray.

The package's modules, in the order a run meets them: `config` (the options), `driver` (start-up,
summary, exit codes), `listing` (inputs listed and skipped on the cluster), `scene_planning`
(which rasters are scenes, their chunks), `pipelines` (one Ray Data stream of images and scene
chunks), `image_stages` and `scene_stages` (the stages), `scene_context` (`--scene-context`),
`scene_commits` (a scene committed once its last chunk is staged), and `rows` (what stages pass on).

The command's names (`main`, `run`, `COMMAND`, `SegmentConfig`) load on first use: the scene
path's CPU workers import modules of this package and must not load the model's (torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import SegmentConfig
    from .driver import COMMAND, RunSummary, main, run

__all__ = ["COMMAND", "RunSummary", "SegmentConfig", "main", "run"]

_HOMES = {
    "SegmentConfig": ".config",
    "COMMAND": ".driver",
    "RunSummary": ".driver",
    "main": ".driver",
    "run": ".driver",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
