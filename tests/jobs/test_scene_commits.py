"""The driver's scene bookkeeping: a scene is committed once, when its last chunk is in."""

import numpy as np
import ray

from connectors.manifest import RunRef
from connectors.raster import Chunk, RasterInfo
from jobs.segment.rows import column_batch, status_columns
from jobs.segment.scene_commits import SceneCommits
from jobs.segment.scene_planning import ScenePlan

INFO = RasterInfo(
    200, 100, 3, ("uint8",) * 3, None, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), None, False, ((100, 200),) * 3
)


def _plan(scene: str, chunks: int, staged: int = 0) -> ScenePlan:
    cores = [Chunk(0, c, (0, c * 10, 10, c * 10 + 10), (0, c * 10, 10, c * 10 + 10)) for c in range(chunks)]
    return ScenePlan(scene, f"/in/{scene}.tif", f"{scene}.tif", scene, 1, "v", INFO, (1, 2, 3), None,
                     tuple(cores), f"/staging/{scene}", frozenset((0, c) for c in range(staged)))  # fmt: skip


class _RecordingCommit:
    """Stands in for the commit task: records what each scene was committed with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def remote(self, plan, results, *_):
        self.calls.append((plan.id, len(results)))
        from connectors.manifest import InputRef, ManifestRow

        row = ManifestRow(
            input=InputRef(plan.id, plan.uri, plan.relative_path, 1, "v"), run=RunRef("r", "v", "t")
        )
        return ray.put(status_columns([row]))


def _chunk_rows(scene: str, cols: list[int], error: str = "") -> dict[str, np.ndarray]:
    rows = [{"scene_id": scene, "chunk": {"row": 0, "col": c}, "error": error} for c in cols]
    return column_batch(rows, ("scene_id", "chunk", "error"))


def test_each_scene_commits_once_when_its_last_chunk_arrives(embedded_ray, monkeypatch):
    recorder = _RecordingCommit()
    monkeypatch.setattr("jobs.segment.scene_commits.ray.remote", lambda **_: lambda fn: recorder)
    commits = SceneCommits(
        [_plan("a", 3), _plan("b", 2, staged=2), _plan("c", 2)], "/out", None, RunRef("r", "v", "t")
    )
    assert recorder.calls == [("b", 0)], "a scene whose chunks were all staged commits at once"
    assert commits.reused == 2

    commits.add(_chunk_rows("a", [0, 1]))
    commits.add(_chunk_rows("a", [1]))  # a retried task reports chunk 1 again
    assert [c for c, _ in recorder.calls] == ["b"]
    commits.add(_chunk_rows("a", [2]))
    commits.add(_chunk_rows("a", [2]))  # ... even after its scene started committing
    assert recorder.calls == [("b", 0), ("a", 3)]
    assert commits.inferred == 3

    commits.add(_chunk_rows("c", [0], error="read failed"))
    done = list(commits.finished(wait=True))
    assert len(done) == 2
    assert [c for c, _ in recorder.calls] == ["b", "a"]
    assert len(list(commits.drain())) == 1, "a scene whose chunks never all came back still gets its row"
    assert recorder.calls[-1] == ("c", 1)
