"""The Ray Data pipeline of a segmentation run: images and scene chunks in one stream, through
one pool of inference actors.

images: blocks of sources to do -> read -> decode + resize (CPU tasks) --+
scenes: one row per chunk still to do -> window read + tiles (CPU) ------+-> BiRefNet (actor
        pool) -> images: masks / cut-outs + a manifest part per batch;
                 chunks: blend + stage, then the scene's commit task (`jobs.segment.scene_commits`)
                 assembles its COG and commits its row as soon as its last chunk is staged.

Every stage commits its own work (outputs, then the manifest part that records them), so what
the driver sees is only small status rows, and a run stopped at any point keeps what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import ray
from ray.data import ActorPoolStrategy

from connectors.manifest import RunRef

from ..common.ray_startup import STAGE_OPTIONS
from ..common.replicas import ReplicaSpec
from .config import SegmentConfig
from .image_stages import FinishStage, InferenceStage, PrepareStage, ReadStage
from .listing import DoneLookup
from .rows import run_ref
from .scene_commits import SceneCommits
from .scene_context import SceneContext
from .scene_planning import ScenePlan
from .scene_stages import ChunkBlendStage, ChunkTileStage, chunk_rows

__all__ = [
    "CPU_TASK_CPUS",
    "INFERENCE_ACTOR_MEMORY",
    "Runtime",
    "pipeline_dataset",
    "replica_spec",
    "run_pipeline",
    "scene_run_ref",
]

#: CPU that each read/decode task and each commit task asks for. Ray Data reserves the minimum
#: of every operator upstream first, so on a small cluster whole-CPU tasks left none for the
#: commit tasks: they waited until nearly every input was read and decoded (measured on 2 CPUs,
#: 1M inputs listed, 10k new: the first commit came 43 s into the pipeline, inferred masks
#: piling up uncommitted). Half a CPU each, both fit beside the inference actor, so commits
#: keep pace with inference. The tasks run single-threaded (birefnet_core.runtime).
CPU_TASK_CPUS = 0.5
#: RAM reserved per inference actor (weights plus activations of a batch), bytes.
INFERENCE_ACTOR_MEMORY = 2 * 1024**3


@dataclass(frozen=True)
class Runtime:
    """What every pipeline of one run shares."""

    config: SegmentConfig
    run_id: str
    device: str
    dtype: str
    gpus: float
    done: DoneLookup | None = None
    on_skipped: Callable[[int], None] | None = None


def replica_spec(rt: Runtime) -> ReplicaSpec:
    """The model the run's actors run."""
    config = rt.config
    return ReplicaSpec.of(
        config, device=rt.device, dtype=rt.dtype, batch_size=config.batch_size, cpu_threads=config.cpu_threads,
        compile=config.compile, compile_scope=config.compile_scope, cuda_graphs=config.cuda_graphs,
        tf32=config.tf32, channels_last=config.channels_last,
    )  # fmt: skip


def scene_run_ref(rt: Runtime) -> RunRef:
    """What every scene row of a run shares; the model ran at the tile size, spelled WxH."""
    tile = rt.config.scene_tile_size
    return RunRef(rt.run_id, rt.config.variant, f"{tile}x{tile}")


def _infer(ds: ray.data.Dataset, rt: Runtime, batch_size: int | None) -> ray.data.Dataset:
    """The accelerator stage, identical for images and scene tiles. ``batch_size`` None hands
    each block over as it is: blocks of images and of chunks have different columns."""
    low, high = rt.config.concurrency
    return ds.map_batches(
        InferenceStage,
        fn_constructor_kwargs={"spec": replica_spec(rt)},
        batch_size=batch_size,
        compute=ActorPoolStrategy(min_size=low, max_size=high),
        num_gpus=rt.gpus,
        num_cpus=1,
        # A replica's own RAM; distinct resources also keep Ray Data from fusing the CPU
        # stages (decode, resize) into the accelerator actor.
        memory=INFERENCE_ACTOR_MEMORY,
        **STAGE_OPTIONS,
    )


def _prepared_images(sources: ray.data.Dataset, rt: Runtime) -> ray.data.Dataset:
    """read -> prepare (CPU tasks), lazily. ``sources`` are what the listing left to do, in
    blocks (`jobs.segment.listing.SOURCES_PER_BLOCK` rows at most) that set how many inputs one read
    task takes on."""
    config = rt.config
    # CPU stages are tasks (callable instances): they hold a core only while a batch runs. With
    # the same options they fuse into one task per listing block: read, decode, resize.
    read = ReadStage(config.s3, rt.done, rt.on_skipped)
    ds = sources.map_batches(read, batch_size=4, num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS)
    prepare = PrepareStage(
        config.variant,
        config.working_size,
        "cutout" in config.outputs,
        config.max_image_pixels,
        config.box_margin,
    )
    return ds.map_batches(prepare, batch_size=config.batch_size, num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS)


def _tiled_chunks(plans: list[ScenePlan], rt: Runtime) -> ray.data.Dataset:
    """One row per chunk still to do, scene after scene (so scenes complete one by one), read
    and cut into tiles (CPU tasks)."""
    config = rt.config
    rows = [row for plan in plans for row in chunk_rows(plan)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    tiles = ChunkTileStage(config.scene_tile_size, config.tile_overlap, config.s3)
    return ds.map_batches(tiles, batch_size=1, num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS)


class _CommitStage:
    """CPU: images to masks and manifest parts, chunks to blended staged cores, each block by
    what it holds (blocks of images and of chunks travel the same stream)."""

    def __init__(self, finish: FinishStage, blend: ChunkBlendStage) -> None:
        self.finish = finish
        self.blend = blend

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.blend(batch) if "scene_id" in batch else self.finish(batch)


def pipeline_dataset(sources: ray.data.Dataset, plans: list[ScenePlan], rt: Runtime) -> ray.data.Dataset:
    """The run's lazy dataset: images and the chunks still to do of ``plans``, through one actor
    pool, to status rows (images: id, status, error; chunks: `CHUNK_STATUS_KEYS`)."""
    config = rt.config
    finish = FinishStage(
        config.output,
        config.outputs,
        config.refine_foreground,
        config.s3,
        run_ref(rt.run_id, config.variant, config.working_size),
        config.box_margin,
    )
    images = _prepared_images(sources, rt)
    chunks = [plan for plan in plans if plan.todo]
    if not chunks:
        inferred = _infer(images, rt, config.batch_size)
        return inferred.map_batches(
            finish, batch_size=max(config.batch_size, 16), num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS
        )
    context = SceneContext(config.scene_context, config.scene_context_weight, config.s3)
    blend = ChunkBlendStage(config.tile_overlap, config.threshold, context, config.s3)
    # Chunks first: their tasks are short (one chunk each), so they are scheduled early and keep
    # interleaving with the long-running read tasks of the images instead of waiting for them.
    inferred = _infer(_tiled_chunks(chunks, rt).union(images), rt, None)
    return inferred.map_batches(
        _CommitStage(finish, blend), batch_size=None, num_cpus=CPU_TASK_CPUS, **STAGE_OPTIONS
    )


def run_pipeline(
    sources: ray.data.Dataset, commits: SceneCommits, rt: Runtime
) -> Iterator[dict[str, np.ndarray]]:
    """Status columns (id, status, error) of every input this run commits, images and scenes
    alike, as they commit. ``commits`` holds the scenes to do."""
    yield from commits.finished()
    stream = pipeline_dataset(sources, list(commits.plans.values()), rt)
    for batch in stream.iter_batches(batch_size=None, batch_format="numpy"):
        if "scene_id" in batch:
            commits.add(batch)
        else:
            yield batch
        yield from commits.finished()
    yield from commits.drain()
