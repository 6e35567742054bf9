"""The driver's side of scene commits: each scene is assembled and committed as soon as its last
chunk is staged, while the other scenes and the images are still running.

The driver sees one small status row per chunk (never pixels) and keeps, per scene, only the
rows still waiting for their scene's commit; work committed at any moment is thus everything but
a few chunks per running scene. Chunks an earlier run staged with the same settings are not
segmented again (`ScenePlan.todo`); a scene with nothing left to segment is committed at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray

from connectors.manifest import ManifestRow, RunRef, write_manifest_part
from connectors.storage import StorageUnavailableError

from ..common.errors import root_cause
from ..common.ray_startup import STAGE_OPTIONS
from .rows import rows_of, status_columns
from .scene_planning import ScenePlan
from .scene_stages import commit_scene

__all__ = ["COMMIT_TASK_CPUS", "SceneCommits"]

log = logging.getLogger(__name__)

#: CPU of a scene's commit task: it mostly waits on storage and on GDAL's own threads, and must
#: not wait for the pipeline's CPUs to drain before it can start.
COMMIT_TASK_CPUS = 0.5


class SceneCommits:
    """Which scenes still wait for chunks, and the commit tasks of those that do not."""

    def __init__(self, plans: list[ScenePlan], output: str, s3: Any, run: RunRef) -> None:
        self.output, self.s3, self.run = output, s3, run
        self.plans = {plan.id: plan for plan in plans}
        # Per scene, its chunks' status rows by (row, col): a retried task may report one twice.
        self.results: dict[str, dict[tuple[int, int], dict[str, Any]]] = {plan.id: {} for plan in plans}
        self.pending: dict[ray.ObjectRef, ScenePlan] = {}
        self.reused = sum(len(plan.chunks) - len(plan.todo) for plan in plans)
        self.inferred = 0
        self._commit = ray.remote(num_cpus=COMMIT_TASK_CPUS, **STAGE_OPTIONS)(commit_scene)
        for plan in plans:
            if not plan.todo:
                self._start(plan)

    def _start(self, plan: ScenePlan) -> None:
        results = list(self.results.pop(plan.id).values())
        ref = self._commit.remote(plan, results, self.output, self.s3, self.run)
        self.pending[ref] = plan

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Take a batch of chunk status rows; start the commit of every scene now complete."""
        for row in rows_of(batch):
            scene = str(row["scene_id"])
            if scene not in self.results:
                continue  # a retried task's repeat of a chunk whose scene is committing already
            chunk = (int(row["chunk"]["row"]), int(row["chunk"]["col"]))
            self.inferred += chunk not in self.results[scene] and not row["error"]
            self.results[scene][chunk] = row
            if len(self.results[scene]) == len(self.plans[scene].todo):
                self._start(self.plans[scene])

    def _committed(self, ref: ray.ObjectRef, plan: ScenePlan) -> dict[str, np.ndarray]:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            if isinstance(root_cause(exc), StorageUnavailableError):
                raise
            error = f"{plan.uri}: committing the scene failed ({type(exc).__name__})"
            log.warning("%s: %s", error, exc)
            row = ManifestRow(input=plan.ref, run=self.run, error=error)
            write_manifest_part(self.output, [row], self.s3)
            return status_columns([row])

    def finished(self, wait: bool = False) -> Iterator[dict[str, np.ndarray]]:
        """Status columns of the scenes committed since the last call (all of them with ``wait``)."""
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=None if wait else 0)
            if not ready:
                return
            yield self._committed(ready[0], self.pending.pop(ready[0]))

    def drain(self) -> Iterator[dict[str, np.ndarray]]:
        """After the pipeline: commit the scenes whose chunks never all came back (as errors),
        then wait for every commit."""
        for scene in list(self.results):
            self._start(self.plans[scene])
        yield from self.finished(wait=True)
